// Local camera and microphone (getUserMedia, started from the Join tap: phones need a user gesture),
// and what we hear: each remote stream through WebAudio (an AnalyserNode per peer for the speaking
// indicator, then the speakers). Chromium delivers remote WebRTC audio to WebAudio only while the
// stream is also attached to a media element, so the page keeps a muted <audio> per peer too.

export class LocalMedia {
  constructor() {
    this.stream = null;
    this.problem = null; // why we send nothing (permission refused, no device, insecure origin)
    this.muted = false;
    this.cameraOff = false;
  }

  /** Ask for camera and microphone; without them the call is receive-only (never an error). */
  async open() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.problem = "this browser gives no camera/microphone here (an insecure origin?): receive-only";
      return;
    }
    const attempts = [
      { audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } } },
      { audio: true, video: false },
      { audio: false, video: true },
    ];
    let lastError = null;
    for (const constraints of attempts) {
      try {
        this.stream = await navigator.mediaDevices.getUserMedia(constraints);
        this.problem = constraints.video ? (constraints.audio ? null : "no microphone: sending video only")
          : "no camera: sending audio only";
        return;
      } catch (error) {
        lastError = error;
        if (error.name === "NotAllowedError" || error.name === "SecurityError") break;
      }
    }
    const denied = lastError && (lastError.name === "NotAllowedError" || lastError.name === "SecurityError");
    this.problem = denied ? "camera and microphone not allowed: receive-only (allow them and join again to send)"
      : `no camera or microphone (${lastError ? lastError.name : "unknown"}): receive-only`;
  }

  get audioTrack() {
    return this.stream ? this.stream.getAudioTracks()[0] || null : null;
  }

  get videoTrack() {
    return this.stream ? this.stream.getVideoTracks()[0] || null : null;
  }

  /** Our tracks on a new connection; the offering side asks to receive what it does not send. */
  addTo(pc, offering) {
    for (const [kind, track] of [["audio", this.audioTrack], ["video", this.videoTrack]]) {
      if (track) pc.addTrack(track, this.stream);
      else if (offering) pc.addTransceiver(kind, { direction: "recvonly" });
    }
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.audioTrack) this.audioTrack.enabled = !muted;
  }

  setCameraOff(off) {
    this.cameraOff = off;
    if (this.videoTrack) this.videoTrack.enabled = !off;
  }

  stateMessage(name) {
    return { t: "state", name, muted: !this.audioTrack || this.muted, camera_off: !this.videoTrack || this.cameraOff,
      audio_only: false };
  }

  describe() {
    return { audio: Boolean(this.audioTrack), video: Boolean(this.videoTrack), problem: this.problem,
      muted: this.muted, cameraOff: this.cameraOff };
  }

  close() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
  }
}

/** Every remote stream into the speakers through an AnalyserNode (levels, tone checks). */
export class Hearing {
  constructor() {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    this.ctx = Context ? new Context() : null;
    this.inputs = new Map(); // session id → {stream, source, analyser, level}
  }

  /** Must run inside the Join tap's handler (autoplay policy). */
  resume() {
    if (this.ctx && this.ctx.state !== "running") this.ctx.resume().catch(() => {});
  }

  /** Follow a peer's current stream (null: it has none any more). */
  attach(sessionId, stream) {
    const known = this.inputs.get(sessionId);
    if (known && known.stream === stream) return;
    if (known) this.detach(sessionId);
    if (!this.ctx || !stream || !stream.getAudioTracks().length) return;
    const source = this.ctx.createMediaStreamSource(stream);
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0.3;
    source.connect(analyser);
    analyser.connect(this.ctx.destination);
    this.inputs.set(sessionId, { stream, source, analyser, level: 0 });
  }

  detach(sessionId) {
    const known = this.inputs.get(sessionId);
    if (!known) return;
    try {
      known.source.disconnect();
      known.analyser.disconnect();
    } catch { /* gone already */ }
    this.inputs.delete(sessionId);
  }

  /** RMS level (0–1) of what a peer sends now. */
  level(sessionId) {
    const input = this.inputs.get(sessionId);
    if (!input) return 0;
    const samples = new Float32Array(input.analyser.fftSize);
    input.analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    input.level = Math.sqrt(sum / samples.length);
    return input.level;
  }

  /** The loudest frequency (Hz) in a peer's audio now, and how far it stands out (dB over the median bin). */
  peak(sessionId) {
    const input = this.inputs.get(sessionId);
    if (!input) return null;
    const bins = new Float32Array(input.analyser.frequencyBinCount);
    input.analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    const sorted = Array.from(bins).filter(Number.isFinite).sort((a, b) => a - b);
    const median = sorted.length ? sorted[sorted.length >> 1] : -Infinity;
    const hz = (best * this.ctx.sampleRate) / input.analyser.fftSize;
    return { hz, db: bins[best], overMedianDb: bins[best] - median };
  }

  close() {
    for (const sid of [...this.inputs.keys()]) this.detach(sid);
    if (this.ctx) this.ctx.close().catch(() => {});
  }
}
