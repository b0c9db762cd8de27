// The start / stop / supervise boilerplate the room and call modules share (the Python twin is
// tui/sdparta/supervise.py): intervals and loops that end when the owner stops, sleeps a command can
// cut short (`wake`), and one place where a loop's failure is reported instead of ending the loop.
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Tasks {
  /** `onError(error, label)`: a loop step or interval callback threw (the loop goes on). */
  constructor(onError = null) {
    this.stopped = false;
    this.onError = onError;
    this._intervals = [];
    this._sleepers = new Map(); // channel → Set of resolve functions
  }

  _failed(error, label) {
    if (this.onError) this.onError(error, label);
  }

  /** `fn` every `ms` until stopped (a returned promise's rejection is reported too). */
  every(ms, fn, label = "interval") {
    const timer = setInterval(() => {
      if (this.stopped) return;
      try {
        Promise.resolve(fn()).catch((error) => this._failed(error, label));
      } catch (error) {
        this._failed(error, label);
      }
    }, ms);
    this._intervals.push(timer);
    return timer;
  }

  /** Sleep `ms`, cut short by `wake(channel)` or by stopping. */
  sleep(ms, channel = "") {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      let sleepers = this._sleepers.get(channel);
      if (!sleepers) {
        sleepers = new Set();
        this._sleepers.set(channel, sleepers);
      }
      const done = () => {
        clearTimeout(timer);
        sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      sleepers.add(done);
    });
  }

  wake(channel = "") {
    for (const done of [...(this._sleepers.get(channel) || [])]) done();
  }

  /** Until stopped: wait `delay()` ms (on `channel`), then run `step` (awaited; a failure is reported and
   *  the loop goes on). `first: "step"` runs the step before the first wait. */
  repeat(label, delay, step, { channel = label, first = "wait" } = {}) {
    const run = async () => {
      let waitFirst = first === "wait";
      while (!this.stopped) {
        if (waitFirst) await this.sleep(delay(), channel);
        waitFirst = true;
        if (this.stopped) return;
        try {
          await step();
        } catch (error) {
          this._failed(error, label);
        }
      }
    };
    run();
  }

  stop() {
    this.stopped = true;
    for (const timer of this._intervals) clearInterval(timer);
    this._intervals = [];
    for (const channel of [...this._sleepers.keys()]) this.wake(channel);
  }
}
