// The page's call: one RTCPeerConnection per remote session, negotiated exactly as the terminal's
// engine does (tui/sdparta/engine/negotiation.py, peer.py, membership.py): the smaller (public key,
// session id) offers, one offer and one answer per pair with every candidate in the SDP (we wait for
// gathering to complete: aiortc takes no trickled candidates), a generation per offer (a lower or
// equal one is stale), the data channel "sdparta" with state / chat / ping-pong / bye / signal /
// restart, a connect timeout, ICE restarts after 4 s of silence, a bye when leaving.
import { toHex } from "sdparta/bytes.js";
import { CHANNEL_LABEL, chatText, encodeControl, parseControl, peerState, validSignal } from "sdparta/channel.js";
import { fingerprint, newSessionId } from "sdparta/keys.js";
import { offersFirst } from "sdparta/wire.js";
import { PortalRoom } from "sdparta/room.js";
import { NostrRoom } from "sdparta/nostr_room.js";
import { CombinedRoom } from "sdparta/combined.js";
import { Tasks } from "sdparta/tasks.js";

export const NEGOTIATION = Object.freeze({
  connectTimeout: 20000, silence: 4000, giveUp: 120000, reoffer: 15000, answeredTimeout: 8000,
  channelFresh: 2000, gatherTimeout: 5000, linger: 12000,
});
const BYE_REASON = "left the call (said bye)";
const OUTBOX_LIMIT = 50;
const MAX_CHAT_LINES = 200;
const FINISHED = new Set(["failed", "left", "gone"]);
const SPARE_OFFERS = 2; // first offers kept ready (a joiner meets several waiting members at once)

function waitForGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** One remote participant: its connection, data channel, state and what we receive from it. */
export class Pair {
  constructor(call, member, weOffer) {
    this.call = call;
    this.member = member;
    this.sessionId = member.sessionId;
    this.fingerprint = fingerprint(member.publicKey);
    this.weOffer = weOffer;
    this.name = member.name;
    this.status = "discovered";
    this.reason = null;
    this.history = [{ t: performance.now(), status: "discovered" }];
    this.startedAt = performance.now();
    this.timeline = {}; // step → ms after discovery (the first time it happened): where connecting takes its time
    this.connectedAfterMs = null; // from discovery
    this.connectedAt = null; // performance.now() of the first "connected"
    this.gen = 0;
    this.remoteGen = -1;
    this.answered = false;
    this.answeredAt = 0;
    this.offeredAt = 0;
    this.offering = false;
    this.pc = null;
    this.previousPc = null;
    this.channel = null;
    this.lastHeard = performance.now();
    this.reconnectingSince = null;
    this.pathWorked = false;
    this.remote = { muted: false, cameraOff: false, audioOnly: false };
    this.stream = null;
    this.videoFrames = 0;
    this.outbox = [];
    this.timers = [];
  }

  get finished() {
    return FINISHED.has(this.status);
  }

  mark(step) {
    if (!(step in this.timeline)) this.timeline[step] = Math.round(performance.now() - this.startedAt);
  }

  get mayComeBack() {
    return this.status === "gone" || (this.status === "left" && this.reason !== BYE_REASON);
  }

  setStatus(status, reason = null) {
    if (status === this.status && reason === this.reason) return;
    this.status = status;
    this.reason = reason;
    this.history.push({ t: performance.now(), status, reason });
    if (this.history.length > 200) this.history.splice(0, 50);
    if (status === "connected" && this.connectedAfterMs === null) {
      this.connectedAt = performance.now();
      this.connectedAfterMs = this.connectedAt - this.startedAt;
    }
    this.call.changed();
  }

  start() {
    this.timers.push(setTimeout(() => this._connectGuard(), NEGOTIATION.connectTimeout));
    if (this.weOffer) this._guard(this.offer());
    else {
      this.warm = this.call.warmConnection();
      this._guard(this.call.room.watch(this.member, true));
    }
  }

  _guard(promise) {
    promise.catch((error) => {
      console.info(`negotiation with ${this.name}: ${error.message}`);
      this.call.notice(`signalling to ${this.name} failed: ${error.message}`);
    });
  }

  // ---------------------------------------------------------------- offer / answer
  onSignal(body) {
    if (this.finished) return;
    if (body.type === "offer" && !this.weOffer) this._guard(this._answer(body));
    else if (body.type === "answer" && this.weOffer) this._guard(this._takeAnswer(body));
  }

  _newConnection(made = null) {
    const pc = made || new RTCPeerConnection({ iceServers: this.call.iceServers, bundlePolicy: "max-bundle" });
    if (this.previousPc) this._retire(this.previousPc);
    this.previousPc = this.pc;
    this.pc = pc;
    const tracks = [];
    pc.ontrack = (event) => {
      if (this.pc !== pc) return;
      tracks.push(event.track);
      this.stream = new MediaStream(tracks);
      event.track.onunmute = () => this.call.changed();
      this.call.changed();
    };
    pc.ondatachannel = (event) => this._wireChannel(pc, event.channel);
    pc.oniceconnectionstatechange = () => {
      if (this.pc === pc) this.mark(`ice-${pc.iceConnectionState}`);
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      this.mark(`pc-${pc.connectionState}`);
      if (pc.connectionState === "connected") {
        this.reconnectingSince = null;
        this.pathWorked = true;
        this.lastHeard = performance.now();
        this.setStatus("connected");
        if (this.previousPc) {
          this._retire(this.previousPc);
          this.previousPc = null;
        }
      } else if (pc.connectionState === "failed" && !this.finished) {
        this.setStatus(this.pathWorked ? "reconnecting" : "failed", "ICE/DTLS failed");
      }
      this.call.changed();
    };
    return pc;
  }

  _retire(pc) {
    if (this.channel && this.channel._pc === pc) this.channel = null;
    try {
      pc.close();
    } catch { /* closed already */ }
  }

  async offer() {
    const room = this.call.room;
    const restart = this.pc !== null;
    const oldChannel = this._channelAlive(NEGOTIATION.channelFresh) ? this.channel : null;
    this.gen += 1;
    this.answered = false;
    this.offering = true;
    this.offeredAt = performance.now();
    try {
      // A first offer takes the call's prepared one (gathered before anyone needed it) when there is one.
      let spare = restart ? null : this.call.takeSpareOffer();
      if (spare) {
        try {
          await spare.ready;
        } catch {
          spare.pc.close();
          spare = null;
        }
      }
      const pc = this._newConnection(spare ? spare.pc : null);
      const gathering = performance.now();
      if (spare) {
        this._wireChannel(pc, spare.channel);
        this.setStatus("connecting");
      } else {
        this.call.media.addTo(pc, true);
        this._wireChannel(pc, pc.createDataChannel(CHANNEL_LABEL, { ordered: true }));
        if (!restart) this.setStatus("connecting");
        await pc.setLocalDescription(await pc.createOffer());
      }
      await waitForGathering(pc, NEGOTIATION.gatherTimeout);
      this.gatherMs = performance.now() - gathering;
      this.preparedOffer = Boolean(spare);
      this.mark("offer-gathered");
      if (this.pc !== pc || this.finished) return false;
      const body = { type: "offer", sdp: pc.localDescription.sdp, gen: this.gen };
      if (oldChannel) this._sendSignal(oldChannel, body);
      // Watching the answer's slot (push subscribed at once, then one read) goes alongside the offer, not
      // before it: the subscription is on its way before the offer is, and an answer needs the offer.
      const watching = room.watch(this.member, true).then(() => this.mark("watching"));
      room.markPending();
      await Promise.all([watching, room.send(this.member, body)]);
      this.mark("offer-sent");
      this.call.prepareBye(this);
      return true;
    } finally {
      this.offering = false;
    }
  }

  async _answer(body) {
    const gen = Number(body.gen ?? 0);
    if (gen <= this.remoteGen) return; // stale or repeated (the channel and the room carry the same offer)
    this.remoteGen = gen;
    const restart = this.pc !== null;
    const oldChannel = restart && this._channelAlive(NEGOTIATION.channelFresh) ? this.channel : null;
    this.mark("offer-received");
    // A first answer takes the connection made when the member was found (its certificate made, our
    // tracks added, candidates pooled): see web/README.md "Where a pair's time goes".
    const warm = !restart && this.warm && this.warm.iceServers === this.call.iceServers ? this.warm : null;
    if (this.warm && !warm) this.warm.pc.close();
    this.warm = null;
    this.warmAnswer = Boolean(warm);
    const pc = this._newConnection(warm ? warm.pc : null);
    if (!restart) this.setStatus("connecting");
    else if (this.status === "connected") this.setStatus("reconnecting", "the peer restarts ICE");
    await pc.setRemoteDescription({ type: "offer", sdp: body.sdp });
    this.mark("offer-applied");
    if (!warm) this.call.media.addTo(pc, false);
    await pc.setLocalDescription(await pc.createAnswer());
    this.mark("answer-created");
    const gathering = performance.now();
    await waitForGathering(pc, NEGOTIATION.gatherTimeout);
    this.gatherMs = performance.now() - gathering;
    this.mark("answer-gathered");
    if (this.pc !== pc || this.finished) return;
    const answer = { type: "answer", sdp: pc.localDescription.sdp, gen };
    if (oldChannel) this._sendSignal(oldChannel, answer);
    if (restart) this.call.room.markPending();
    await this.call.room.send(this.member, answer);
    this.mark("answer-sent");
    this.call.prepareBye(this);
  }

  async _takeAnswer(body) {
    const pc = this.pc;
    if (this.answered || Number(body.gen ?? 0) !== this.gen) return;
    if (pc === null || pc.signalingState !== "have-local-offer") return;
    this.answered = true;
    this.answeredAt = performance.now();
    this.mark("answer-received");
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    this.mark("answer-applied");
  }

  _connectGuard() {
    if (this.connectedAfterMs !== null || this.finished) return;
    if (this.pathWorked) {
      this.beginReconnect("not connected in time after coming back: trying again");
      return;
    }
    const state = this.pc ? this.pc.iceConnectionState : "new";
    const why = !this.pc ? "no offer arrived" : this.pc.signalingState === "have-local-offer" ? "no answer arrived"
      : `ICE checks did not succeed (ICE ${state}): a TURN relay may be needed`;
    this.finish("failed", `not connected within ${NEGOTIATION.connectTimeout / 1000} s: ${why}`);
  }

  // ---------------------------------------------------------------- data channel
  _wireChannel(pc, channel) {
    channel._pc = pc;
    this.channel = channel;
    channel.onopen = () => {
      this.mark("channel-open");
      this.lastHeard = performance.now();
      this.sendControl(this.call.media.stateMessage(this.call.name));
      while (this.outbox.length && this.sendControl(this.outbox[0])) this.outbox.shift();
      this.call.changed();
    };
    channel.onmessage = (event) => {
      this.lastHeard = performance.now();
      const message = parseControl(event.data);
      if (message === null) {
        this.call.invalid("data channel: malformed message");
        return;
      }
      this.onControl(message);
    };
  }

  _channelAlive(within) {
    return this.channel !== null && this.channel.readyState === "open" && performance.now() - this.lastHeard < within;
  }

  sendControl(message) {
    const channel = this.channel;
    if (!channel || channel.readyState !== "open") return false;
    const text = encodeControl(message);
    if (text === null) return false;
    try {
      channel.send(text);
    } catch {
      return false;
    }
    return true;
  }

  sendOrHold(message) {
    if (!this.sendControl(message)) {
      this.outbox.push(message);
      if (this.outbox.length > OUTBOX_LIMIT) this.outbox.shift();
    }
  }

  _sendSignal(channel, body) {
    const text = encodeControl({ t: "signal", body });
    if (text === null || channel.readyState !== "open") return false;
    try {
      channel.send(text);
    } catch {
      return false;
    }
    return true;
  }

  onControl(message) {
    const kind = message.t;
    if (kind === "chat") {
      const text = chatText(message);
      if (text !== null) this.call.addChat(this, text);
    } else if (kind === "state") {
      this.remote = peerState(message);
    } else if (kind === "bye") {
      this.finish("left", BYE_REASON);
    } else if (kind === "ping") {
      this.sendControl({ t: "pong" });
    } else if (kind === "restart" && this.weOffer && this.status === "connected") {
      this.beginReconnect("the peer asked for an ICE restart");
    } else if (kind === "signal") {
      if (validSignal(message.body)) this.onSignal(message.body);
      else this.call.invalid("data channel: malformed signal");
    }
    this.call.changed();
  }

  // ---------------------------------------------------------------- reconnection
  heardRecently(now) {
    return this.status === "connected" && now - this.lastHeard < NEGOTIATION.silence;
  }

  heartbeat(now) {
    if (this.status === "connected") {
      this.sendControl({ t: "ping" });
      if (now - this.lastHeard > NEGOTIATION.silence) this.beginReconnect(`nothing heard for ${NEGOTIATION.silence / 1000} s`);
    } else if (this.status === "reconnecting") {
      this.sendControl({ t: "ping" });
      if (now - (this.reconnectingSince ?? now) > NEGOTIATION.giveUp) {
        this.finish("failed", `could not reconnect for ${NEGOTIATION.giveUp / 1000} s`);
        return;
      }
      this.call.room.markPending(3000);
      if (this.weOffer && !this.offering) {
        const stale = this.answered ? now - this.answeredAt > NEGOTIATION.answeredTimeout
          : now - this.offeredAt > NEGOTIATION.reoffer;
        if (stale) this._guard(this.offer());
      }
    }
  }

  beginReconnect(reason) {
    if (this.status !== "reconnecting") this.setStatus("reconnecting", reason);
    if (this.reconnectingSince === null) {
      this.reconnectingSince = performance.now();
      this._guard(this.call.room.watch(this.member, true));
      this.call.room.markPending();
      this.call.room.kick();
      if (this.weOffer && !this.offering) this._guard(this.offer());
    }
  }

  requestRestart() {
    if (this.finished || this.pc === null) return;
    if (!this.weOffer) this.sendControl({ t: "restart" });
    else this.beginReconnect("ICE restart requested");
  }

  // ---------------------------------------------------------------- teardown
  finish(status, reason) {
    if (this.finished) {
      if (this.status === "failed" && (status === "left" || status === "gone")) {
        this.setStatus(status, reason);
        this.call.lingerThenDrop(this);
      }
      return;
    }
    this.setStatus(status, reason);
    this.close();
    if (status !== "failed") this.call.lingerThenDrop(this);
  }

  close() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers = [];
    if (this.warm) this.warm.pc.close();
    this.warm = null;
    for (const pc of [this.previousPc, this.pc]) if (pc) this._retire(pc);
    this.previousPc = null;
    this.stream = null;
    this.call.changed();
  }

  /** What the page shows and the tests read. */
  summary() {
    return {
      sessionId: this.sessionId, name: this.name, fingerprint: this.fingerprint, status: this.status,
      reason: this.reason, weOffer: this.weOffer, connectedAfterMs: this.connectedAfterMs,
      connectedAt: this.connectedAt, discoveredAt: this.startedAt, gatherMs: this.gatherMs ?? null,
      preparedOffer: Boolean(this.preparedOffer), warmAnswer: Boolean(this.warmAnswer), timeline: { ...this.timeline },
      iceServers: this.pc ? (this.pc.getConfiguration().iceServers || []).map((s) => s.urls) : null,
      history: this.history.map((h) => h.status), videoFrames: this.videoFrames, remote: { ...this.remote },
      connectionState: this.pc ? this.pc.connectionState : "new", gen: this.gen, remoteGen: this.remoteGen,
    };
  }
}

/** The page's call: the room, the pairs, chat. `onChange` is called (batched) whenever something shown changed. */
export class Call {
  /** `portal`: a Portal (or null), `relays`: Nostr relay URLs (possibly none). */
  /** `iceServers`: the page's own (the join form's STUN servers, [] for none); the room's TURN relay is
   *  added when someone shares one and we have none of our own. */
  constructor({ portal, relays = [], keys, identity, name, media, onChange, iceServers = [] }) {
    this.portal = portal;
    this.relays = relays;
    this.keys = keys;
    this.identity = identity;
    this.name = name;
    this.media = media;
    this.onChange = onChange;
    this.ownIce = iceServers;
    this.iceServers = iceServers; // replaced (a new array) whenever the room's TURN relay changes
    this.roomSettings = null; // the newest record of the room's settings (by its signed ts)
    this.roomTurn = [];
    this.roomSfu = null;
    this.sessionId = newSessionId();
    this.fingerprint = fingerprint(identity.publicKey);
    this.pairs = new Map(); // session id → Pair (what the page lists)
    this.departed = new Map(); // session id → Pair that left the list (remembered)
    this.chat = [];
    this.notices = [];
    this.invalidCount = 0;
    this.joinedAt = null;
    this.room = null;
    this.tasks = new Tasks((error, label) => this.notice(`${label}: ${error.message}`));
    this._byes = new Map(); // session id → the bye being prepared (one at a time per pair)
    this._changeQueued = false;
    this.left = false;
    this.spares = []; // offers gathered before they are needed: {pc, channel, ready, iceServers}
  }

  /** Keep SPARE_OFFERS first offers ready (connection, our media, data channel, candidates), so a new
   *  member is offered to without waiting for ICE gathering (~150 ms in Chromium). */
  prepareSpareOffer() {
    while (!this.left && this.spares.length < SPARE_OFFERS) {
      const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
      this.media.addTo(pc, true);
      const channel = pc.createDataChannel(CHANNEL_LABEL, { ordered: true });
      const ready = pc.createOffer().then((offer) => pc.setLocalDescription(offer))
        .then(() => waitForGathering(pc, NEGOTIATION.gatherTimeout));
      ready.catch(() => {});
      this.spares.push({ pc, channel, ready, iceServers: this.iceServers });
    }
  }

  /** A connection for a member we will answer, made when it is found (before its offer arrives): its
   *  DTLS certificate is made and its candidates pooled meanwhile, our tracks are added (matched to
   *  the offer's m-lines by setRemoteDescription, as addTrack's transceivers are). */
  warmConnection() {
    if (this.left) return null;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle", iceCandidatePoolSize: 1 });
    this.media.addTo(pc, false);
    return { pc, iceServers: this.iceServers };
  }

  takeSpareOffer() {
    const spare = this.spares.shift() || null;
    if (spare && spare.iceServers !== this.iceServers) { // made before the room's TURN relay was known
      for (const old of [spare, ...this.spares]) old.pc.close();
      this.spares = [];
      setTimeout(() => this.prepareSpareOffer(), 0);
      return null;
    }
    setTimeout(() => this.prepareSpareOffer(), 0);
    return spare;
  }

  async start() {
    const makers = [];
    if (this.portal) makers.push((events) => new PortalRoom(this.portal, this.keys, this.identity, this.name, this.sessionId, events));
    if (this.relays.length) makers.push((events) => new NostrRoom(this.relays, this.keys, this.identity, this.name, this.sessionId, events));
    if (!makers.length) throw new Error("no network: choose this portal, a Nostr relay, or both");
    this.room = makers.length === 1 ? makers[0](this) : new CombinedRoom(makers, this);
    this.prepareSpareOffer();
    await this.room.start();
    this.joinedAt = performance.now();
    this.tasks.every(1000, () => {
      const now = performance.now();
      for (const pair of this.pairs.values()) pair.heartbeat(now);
    }, "heartbeat");
    this.changed();
  }

  changed() {
    if (this._changeQueued) return;
    this._changeQueued = true;
    queueMicrotask(() => {
      this._changeQueued = false;
      this.onChange?.();
    });
  }

  notice(text) {
    this.notices.push({ t: Date.now(), text });
    if (this.notices.length > 20) this.notices.shift();
    this.changed();
  }

  invalid() {
    this.invalidCount++;
  }

  // ---------------------------------------------------------------- room events
  memberSeen(member) {
    const sid = member.sessionId;
    if (sid === this.sessionId) return;
    const old = this.pairs.get(sid) || this.departed.get(sid);
    if (old && !old.mayComeBack) return;
    const pair = new Pair(this, member, offersFirst(this.identity.publicKey, this.sessionId, member));
    if (old) {
      pair.gen = old.gen;
      pair.remoteGen = old.remoteGen;
      pair.pathWorked = old.pathWorked;
      old.close();
    }
    this.departed.delete(sid);
    this.pairs.set(sid, pair);
    pair.start();
    this.changed();
  }

  memberGone(member, status, reason) {
    const pair = this.pairs.get(member.sessionId);
    if (!pair || (pair.finished && pair.status !== "failed")) return;
    if (pair.heardRecently(performance.now())) return; // the data channel says it is alive
    pair.finish(status, reason);
  }

  message(member, body) {
    let pair = this.pairs.get(member.sessionId);
    if (!pair) {
      this.memberSeen(member);
      pair = this.pairs.get(member.sessionId);
      if (!pair) return;
    }
    if (typeof body.name === "string" && body.name) pair.name = body.name.slice(0, 48);
    if (body.type === "bye") pair.finish("left", BYE_REASON);
    else if (!pair.finished && (body.type === "offer" || body.type === "answer")) pair.onSignal(body);
    this.changed();
  }

  /** The room's settings, on joining and with every newer record (membership.py settings): its TURN
   *  relay is used unless we have our own (a newer relay replaces the room's older one; a record
   *  without one keeps it), and pairs still trying without it start again through it; its SFU entry is
   *  kept and told (the page has no SFU rooms: media stays peer to peer). */
  settings(settings) {
    if (this.roomSettings !== null && settings.tsMs <= this.roomSettings.tsMs) return; // another network's older copy
    this.roomSettings = settings;
    const shared = fingerprint(settings.author);
    const sfu = settings.sfu ? JSON.stringify(settings.sfu) : null;
    if (sfu !== (this.roomSfu && JSON.stringify(this.roomSfu))) {
      this.roomSfu = settings.sfu;
      const label = settings.sfu && `${String(settings.sfu.type)} ${String(settings.sfu.url)} room ${String(settings.sfu.room)}`;
      this.notice(label ? `the room names an SFU (${label}, shared by ${shared}); this page stays peer to peer`
        : "the room no longer names an SFU");
    }
    const ownTurn = this.ownIce.some((s) => /^turns?:/.test(String(s.urls)));
    const same = JSON.stringify(settings.turn) === JSON.stringify(this.roomTurn);
    if (!settings.turn.length || ownTurn || same) return;
    this.roomTurn = settings.turn;
    this.iceServers = [...this.ownIce, ...settings.turn.map((t) => ({ urls: t.url, username: t.username,
      credential: t.credential }))];
    this.notice(`using the room's TURN relay ${settings.turn[0].url} (shared by ${shared})`);
    for (const pair of this.pairs.values()) {
      if (pair.weOffer && pair.status === "connecting" && pair.pc !== null) pair.beginReconnect("trying again through the room's TURN relay");
    }
  }

  alive(member) {
    const pair = this.pairs.get(member.sessionId);
    return Boolean(pair && toHex(pair.member.publicKey) === toHex(member.publicKey) && pair.status === "connected");
  }

  lingerThenDrop(pair) {
    setTimeout(() => {
      if (this.pairs.get(pair.sessionId) === pair && pair.finished) {
        this.pairs.delete(pair.sessionId);
        this.departed.set(pair.sessionId, pair);
        this.changed();
      }
    }, NEGOTIATION.linger);
  }

  // ---------------------------------------------------------------- commands
  addChat(pair, text) {
    this.chat.push({ t: Date.now(), from: pair ? pair.name : this.name, fingerprint: pair ? pair.fingerprint : this.fingerprint,
      own: pair === null, text });
    if (this.chat.length > MAX_CHAT_LINES) this.chat.shift();
    this.changed();
  }

  sendChat(text) {
    text = text.trim();
    if (!text) return;
    for (const pair of this.pairs.values()) if (!pair.finished) pair.sendOrHold({ t: "chat", text, ts: Date.now() });
    this.addChat(null, text);
  }

  broadcastState() {
    const message = this.media.stateMessage(this.name);
    for (const pair of this.pairs.values()) pair.sendControl(message);
    this.changed();
  }

  /** Seal (and on a portal upload) the bye to this pair ahead, so a closing tab only has to send it. */
  prepareBye(pair) {
    if (this.left || !this.room || !this.room.prepareFarewell) return;
    const previous = this._byes.get(pair.sessionId) || Promise.resolve();
    const next = previous.then(() => {
      if (this.left || pair.finished) return undefined;
      // a ms past now: strictly newer than the message just sent (readers drop a ts not above the last)
      const message = { v: 1, from: this.sessionId, to: pair.sessionId, name: this.name, ts: Date.now() + 1, type: "bye" };
      return this.room.prepareFarewell(pair.member, message);
    }).catch(() => {});
    this._byes.set(pair.sessionId, next);
  }

  /** The tab is closing (pagehide): nothing may be awaited. bye on every open data channel (then the
   *  channel closed, which sends what is queued first) and the byes prepared for the room. */
  farewell() {
    if (this.left) return;
    this.left = true;
    this.tasks.stop();
    for (const pair of this.pairs.values()) {
      pair.sendControl({ t: "bye" });
      try {
        if (pair.channel) pair.channel.close();
      } catch { /* closed already */ }
    }
    if (this.room && this.room.sendFarewells) this.room.sendFarewells();
  }

  /** bye on every open data channel and in every pair slot, then our record out of the list. */
  async leave() {
    if (this.left) return;
    this.left = true;
    this.tasks.stop();
    for (const spare of this.spares) spare.pc.close();
    this.spares = [];
    for (const pair of this.pairs.values()) pair.sendControl({ t: "bye" });
    try {
      if (this.room) await this.room.leave();
    } finally {
      if (this.room) this.room.close();
      for (const pair of this.pairs.values()) pair.close();
      this.changed();
    }
  }

  report() {
    return {
      sessionId: this.sessionId, fingerprint: this.fingerprint, name: this.name, left: this.left,
      timeOrigin: performance.timeOrigin, joinTapAt: this.joinTapAt ?? null, keysAt: this.keysAt ?? null, joinedAt: this.joinedAt,
      push: Boolean(this.room && this.room.pushActive),
      networks: { portal: this.portal ? this.portal.url : null, relays: [...this.relays] },
      iceServers: this.iceServers.map((s) => String(s.urls)), ownIce: this.ownIce.map((s) => String(s.urls)),
      settings: this.roomSettings && { ts: this.roomSettings.tsMs, author: fingerprint(this.roomSettings.author),
        turn: this.roomSettings.turn.map((t) => t.url), sfu: this.roomSfu && { type: this.roomSfu.type,
          url: this.roomSfu.url, room: this.roomSfu.room } },
      settingsPushed: this.room ? this.room.settingsPushed || 0 : 0,
      byesReady: this.room && this.room.readyFarewells !== undefined ? this.room.readyFarewells : 0,
      notices: this.notices.map((n) => n.text), invalid: this.invalidCount + (this.room ? this.room.invalid : 0),
      pairs: [...this.pairs.values()].map((p) => p.summary()),
      departed: [...this.departed.values()].map((p) => p.summary()),
      chat: this.chat.map((c) => ({ from: c.from, own: c.own, text: c.text })),
      media: this.media.describe(),
    };
  }
}
