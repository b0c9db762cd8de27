// Several networks carrying one room (tui/sdparta/room/combined.py): written to all, read from all,
// each message delivered once, a member gone only when no network carries it any more.
import { memberKey } from "sdparta/room.js";

const SEEN_KEPT = 1024;

export class CombinedRoom {
  /** `make(events)` → one network's room (PortalRoom / NostrRoom) reporting to `events`. */
  constructor(makers, events) {
    this.events = events;
    this.carriers = new Map(); // memberKey → Set of network indexes
    this.seen = new Set();
    this.rooms = makers.map((make, i) => make({
      memberSeen: (m) => this._seen(i, m),
      memberGone: (m, status, reason) => this._gone(i, m, status, reason),
      message: (m, body, via) => this._message(m, body, via),
      invalid: (reason) => events.invalid?.(reason),
      settings: (settings) => events.settings?.(settings),
      alive: (m) => events.alive(m),
    }));
  }

  get pushActive() {
    return this.rooms.some((r) => r.pushActive);
  }

  get invalid() {
    return this.rooms.reduce((n, r) => n + r.invalid, 0);
  }

  async start() {
    const results = await Promise.allSettled(this.rooms.map((r) => r.start()));
    if (results.every((r) => r.status === "rejected")) throw results[0].reason;
    this.failed = results.map((r) => (r.status === "rejected" ? String(r.reason?.message || r.reason) : null));
  }

  _seen(i, member) {
    const key = memberKey(member);
    let carriers = this.carriers.get(key);
    if (!carriers) {
      carriers = new Set();
      this.carriers.set(key, carriers);
    }
    const first = carriers.size === 0;
    carriers.add(i);
    if (first) this.events.memberSeen(member);
  }

  _gone(i, member, status, reason) {
    const key = memberKey(member);
    const carriers = this.carriers.get(key);
    if (!carriers) return;
    carriers.delete(i);
    if (carriers.size === 0 || status === "left") {
      this.carriers.delete(key);
      this.events.memberGone(member, status, reason);
    }
  }

  _message(member, body, via) {
    const id = `${memberKey(member)}/${body.type}/${body.ts}/${body.gen ?? 0}`;
    if (this.seen.has(id)) return;
    this.seen.add(id);
    if (this.seen.size > SEEN_KEPT) this.seen.delete(this.seen.values().next().value);
    this.events.message(member, body, via);
  }

  async send(member, body) {
    const first = this.rooms[0];
    await this.publish(member, { v: 1, from: first.sessionId, to: member.sessionId, name: first.name, ts: Date.now(),
      ...body });
  }

  async publish(member, message) {
    const results = await Promise.allSettled(this.rooms.map((r) => r.publish(member, message)));
    if (results.every((r) => r.status === "rejected")) throw results[0].reason;
  }

  watch(member, active) {
    return Promise.all(this.rooms.map((r) => r.watch(member, active).catch(() => {})));
  }

  markPending(ms) {
    for (const r of this.rooms) r.markPending(ms);
  }

  kick() {
    for (const r of this.rooms) r.kick();
  }

  /** The same bye bytes prepared on every network (sent by `sendFarewells` from a closing tab). */
  prepareFarewell(member, message) {
    return Promise.allSettled(this.rooms.map((r) => r.prepareFarewell(member, message)));
  }

  get settingsPushed() {
    return this.rooms.reduce((n, r) => n + (r.settingsPushed || 0), 0);
  }

  get readyFarewells() {
    return Math.min(...this.rooms.map((r) => r.readyFarewells));
  }

  sendFarewells() {
    for (const r of this.rooms) r.sendFarewells();
  }

  async leave() {
    await Promise.allSettled(this.rooms.map((r) => r.leave()));
  }

  close() {
    for (const r of this.rooms) r.close();
  }
}
