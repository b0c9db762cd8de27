// One participant's presence in a room over Nostr relays (docs/protocol.md §8; the Python twin is
// tui/sdparta/room/nostr_room.py): our own addressable presence record (refreshed every 60 s, every
// 5 s while a pair negotiates), one REQ per relay bringing the room's records and the messages
// addressed to us, everything ordered by the sealed content's signed timestamps, never by arrival.
// Written to every relay, read from all; the same events interface as room.js's PortalRoom.
import { toHex } from "sdparta/bytes.js";
import { NostrKey, parseEvent, tagValue } from "sdparta/nostr.js";
import { APP_KIND, MAX_PRESENCE_RECORD_BYTES, RoomTags, decodePresenceRecord, encodePresenceRecord, messageEvent,
  presenceEvent, unb64 } from "sdparta/nostr_wire.js";
import { MAX_MESSAGE_BYTES, MAX_SETTINGS_BYTES, decodeMessage, decodeSettings, encodeMessage } from "sdparta/wire.js";
import { MAX_SETTINGS_FUTURE_MS, memberKey } from "sdparta/room.js";
import { StoreError } from "sdparta/portal.js";
import { Tasks, sleep } from "sdparta/tasks.js";

export const NOSTR_TIMING = Object.freeze({ reannounce: 60000, reannounceRetry: 5000, ttl: 150000 });
const OK_TIMEOUT_MS = 10000;
const STORED_WAIT_MS = 3000;
const CONNECT_WAIT_MS = 6000;
const SINCE_MARGIN_S = 30;
const MAX_UNMATCHED = 64;
const REFUSED = /^(blocked|restricted|auth-required|pow):/;

/** One relay's WebSocket: publish with OK, one subscription re-sent on every reconnect. */
class Relay {
  constructor(url, onEvent) {
    this.url = url;
    this.onEvent = onEvent;
    this.ws = null;
    this.open = false;
    this.closed = false;
    this.refused = null;
    this.delay = 500;
    this.waiting = new Map(); // event id → resolve
    this.req = null; // [subId, ...filters]
    this.eose = null;
    this.eoseSeen = false;
    this.sent = 0;
    this.received = 0;
    this.rejected = 0;
    this._connect();
  }

  _connect() {
    if (this.closed || this.refused) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.refused = "not a WebSocket URL";
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.open = true;
      this.delay = 500;
      if (this.req) ws.send(JSON.stringify(["REQ", ...this.req]));
    };
    ws.onmessage = (event) => this._handle(event.data);
    ws.onclose = () => {
      this.open = false;
      for (const resolve of this.waiting.values()) resolve({ ok: false, message: "connection closed" });
      this.waiting.clear();
      if (this.closed || this.refused) return;
      setTimeout(() => this._connect(), this.delay * (0.5 + Math.random()));
      this.delay = Math.min(this.delay * 2, 30000);
    };
  }

  reconnect() {
    if (!this.open && this.ws && this.ws.readyState > 1) this._connect();
  }

  subscribe(subId, filters) {
    this.req = [subId, ...filters];
    if (this.open) this.ws.send(JSON.stringify(["REQ", ...this.req]));
  }

  /** Send without waiting for the OK (a closing tab: nobody would read it). */
  sendNow(event) {
    if (!this.open || this.refused) return;
    try {
      this.ws.send(JSON.stringify(["EVENT", event]));
      this.sent++;
    } catch { /* closing */ }
  }

  publish(event) {
    if (!this.open || this.refused) return Promise.resolve({ ok: false, message: this.refused || "not open" });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(event.id);
        resolve({ ok: false, message: "no OK within 10 s" });
      }, OK_TIMEOUT_MS);
      this.waiting.set(event.id, (result) => {
        clearTimeout(timer);
        resolve(result);
      });
      this.sent++;
      this.ws.send(JSON.stringify(["EVENT", event]));
    });
  }

  _handle(raw) {
    if (typeof raw !== "string" || raw.length > 512 * 1024) return;
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (!Array.isArray(message)) return;
    const [type, a, b, c] = message;
    if (type === "OK" && typeof a === "string") {
      const resolve = this.waiting.get(a);
      this.waiting.delete(a);
      const text = typeof c === "string" ? c : "";
      if (b !== true && REFUSED.test(text)) this.refused = text;
      if (resolve) resolve({ ok: b === true || /^duplicate:/.test(text), message: text });
    } else if (type === "EVENT" && this.req && a === this.req[0] && b && typeof b === "object") {
      let event;
      try {
        event = parseEvent(JSON.stringify(b));
      } catch {
        this.rejected++;
        return;
      }
      this.received++;
      this.onEvent(event, this.url);
    } else if (type === "EOSE" && this.req && a === this.req[0]) {
      this.eoseSeen = true;
      if (this.eose) this.eose();
    }
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}

export class NostrRoom {
  constructor(urls, keys, identity, name, sessionId, events) {
    this.urls = urls;
    this.keys = keys;
    this.identity = identity;
    this.name = name;
    this.sessionId = sessionId;
    this.events = events;
    this.tags = new RoomTags(keys);
    this.nostrKey = new NostrKey();
    this.ownKey = toHex(identity.publicKey) + "/" + sessionId;
    this.members = new Map();
    this.departed = new Map(); // memberKey → ts of its goodbye
    this.authors = new Map(); // nostr pubkey → memberKey
    this.unmatched = [];
    this.lastMessageTs = new Map();
    this.pendingUntil = 0;
    this.started = false;
    this.invalid = 0;
    this.relays = [];
    this.tasks = new Tasks();
    this.settings = null; // the newest record seen (by its signed ts)
    this.lastSentTs = new Map(); // memberKey → ts of the last message we published to it
    this.farewells = new Map(); // memberKey → the bye event, signed ahead (sendFarewells)
    this.leavingEvent = null; // our leaving presence record, signed ahead
  }

  get closing() {
    return this.tasks.stopped;
  }

  get pushActive() {
    return this.relays.some((r) => r.open);
  }

  async start() {
    this.roomTag = await this.tags.room();
    this.toTag = await this.tags.to(this.sessionId);
    this.settingsTag = await this.tags.settings();
    this.relays = this.urls.map((url) => new Relay(url, (event, via) => {
      this._onEvent(event, via).catch((error) => this._countInvalid(`relay: ${error.message}`));
    }));
    const opened = Date.now();
    while (!this.pushActive && Date.now() - opened < CONNECT_WAIT_MS) await sleep(50);
    if (!this.pushActive) throw new StoreError(`no Nostr relay can be used (${this.urls.join(", ")})`);
    const since = Math.floor(Date.now() / 1000) - NOSTR_TIMING.ttl / 1000 - SINCE_MARGIN_S;
    const subId = `sdparta-${this.sessionId}`;
    const stored = Promise.all(this.relays.map((relay) => new Promise((resolve) => {
      relay.eose = resolve;
      if (relay.eoseSeen) resolve();
    })));
    for (const relay of this.relays) {
      relay.subscribe(subId, [
        { kinds: [APP_KIND], "#x": [this.roomTag, this.toTag], since },
        { kinds: [APP_KIND], "#x": [this.settingsTag, this.toTag], limit: 16 },
      ]);
    }
    await Promise.race([stored, sleep(STORED_WAIT_MS)]);
    await this._announce();
    this.started = true;
    this._announceLoop();
    this.tasks.every(1000, () => this.expireStale());
  }

  async leave() {
    this.tasks.stop();
    if (!this.started) return;
    await Promise.all([...this.members.values()].map((m) => this.send(m, { type: "bye" }).catch(() => {})));
    try {
      await this._announce(true);
    } catch { /* no relay took it: the record expires */ }
  }

  close() {
    this.tasks.stop();
    for (const relay of this.relays) relay.close();
  }

  /** Seal and sign ahead the bye `message` to `member` (sent by `sendFarewells` from a closing tab). */
  async prepareFarewell(member, message) {
    const key = memberKey(member);
    if (message.ts <= (this.lastSentTs.get(key) ?? -1)) return; // readers would take it for a replay
    const dataKey = await this.tags.pairKey(this.sessionId, member.sessionId);
    const blob = await encodeMessage(this.keys, this.identity, dataKey, message);
    const event = await messageEvent(this.keys, this.nostrKey, this.sessionId, member.sessionId, blob,
      Math.floor(Date.now() / 1000) + 1);
    if (message.ts > (this.lastSentTs.get(key) ?? -1)) this.farewells.set(key, event);
  }

  /** How many members a bye is prepared for (the tests wait for it before closing the tab). */
  get readyFarewells() {
    return this.farewells.size;
  }

  /** The tab is closing: the prepared byes and our leaving record go to every open relay, unawaited. */
  sendFarewells() {
    const events = [...this.farewells.values(), ...(this.leavingEvent ? [this.leavingEvent] : [])];
    for (const relay of this.relays) for (const event of events) relay.sendNow(event);
    this.farewells.clear();
    this.tasks.stop();
  }

  markPending(ms = 10000) {
    this.pendingUntil = Math.max(this.pendingUntil, performance.now() + ms);
  }

  kick() {
    for (const relay of this.relays) relay.reconnect();
  }

  async watch() {
    // the subscription already brings every message addressed to us
  }

  async send(member, body) {
    await this.publish(member, { v: 1, from: this.sessionId, to: member.sessionId, name: this.name, ts: Date.now(), ...body });
  }

  /** A full message exactly as given (a combined room sends the same bytes over every network). */
  async publish(member, message) {
    const key = memberKey(member);
    this.lastSentTs.set(key, Math.max(message.ts, this.lastSentTs.get(key) ?? -1));
    this.farewells.delete(key);
    const dataKey = await this.tags.pairKey(this.sessionId, member.sessionId);
    const blob = await encodeMessage(this.keys, this.identity, dataKey, message);
    await this._publish(await messageEvent(this.keys, this.nostrKey, this.sessionId, member.sessionId, blob));
  }

  async _announce(leaving = false) {
    const blob = await encodePresenceRecord(this.keys, this.identity, this.sessionId, this._nostrPublic(), this.name,
      Date.now(), { leaving });
    await this._publish(await presenceEvent(this.keys, this.nostrKey, this.sessionId, blob));
    if (!leaving) this._prepareLeaving().catch(() => {});
  }

  /** Our leaving record, newer than the record just announced (signed ts and created_at). */
  async _prepareLeaving() {
    const blob = await encodePresenceRecord(this.keys, this.identity, this.sessionId, this._nostrPublic(), this.name,
      Date.now() + 1, { leaving: true });
    this.leavingEvent = await presenceEvent(this.keys, this.nostrKey, this.sessionId, blob, Math.floor(Date.now() / 1000) + 1);
  }

  _nostrPublic() {
    return Uint8Array.from(this.nostrKey.pubkey.match(/../g), (h) => parseInt(h, 16));
  }

  async _publish(event) {
    const results = await Promise.all(this.relays.map((relay) => relay.publish(event)));
    if (!results.some((r) => r.ok)) {
      throw new StoreError(`no relay stored the event (${results.map((r) => r.message).join("; ")})`);
    }
  }

  _announceLoop() {
    let failed = false;
    const period = () => ((failed || performance.now() < this.pendingUntil) ? NOSTR_TIMING.reannounceRetry
      : NOSTR_TIMING.reannounce) * (0.8 + 0.2 * Math.random());
    this.tasks.repeat("re-announce", period, async () => {
      try {
        await this._announce();
        failed = false;
      } catch {
        failed = true;
      }
      this.expireStale();
    });
  }

  // ---------------------------------------------------------------- roster (one record at a time)
  fresh(member) {
    return Date.now() - member.tsMs <= NOSTR_TIMING.ttl;
  }

  _countInvalid(reason) {
    this.invalid++;
    this.events.invalid?.(reason);
  }

  _record(member) {
    const key = memberKey(member);
    if (key === this.ownKey || !this.fresh(member)) return;
    if ((this.departed.get(key) ?? -1) >= member.tsMs) return; // older than its goodbye: a replay
    const known = this.members.get(key);
    if (known && known.tsMs >= member.tsMs) return;
    this.members.set(key, member);
    if (!known) {
      this.markPending();
      this.events.memberSeen(member);
    }
  }

  _depart(key, tsMs) {
    this.departed.set(key, Math.max(tsMs, this.departed.get(key) ?? -1));
    if (this.departed.size > 512) this.departed.delete(this.departed.keys().next().value);
    const known = this.members.get(key);
    if (known && known.tsMs <= tsMs) {
      this.members.delete(key);
      this.events.memberGone(known, "left", "left the room");
    }
  }

  expireStale() {
    for (const [key, m] of [...this.members]) {
      if (!this.fresh(m)) {
        this.members.delete(key);
        this.events.memberGone(m, "gone", "stopped announcing (crashed or lost its network)");
      }
    }
  }

  // ---------------------------------------------------------------- receiving
  async _onEvent(event, via) {
    if (event.pubkey === this.nostrKey.pubkey || event.kind !== APP_KIND) return;
    const d = tagValue(event, "d");
    const x = tagValue(event, "x");
    if (d === null || x === null) {
      this._countInvalid("relay: an event without our tags");
      return;
    }
    try {
      if (x === this.roomTag) await this._onPresence(event, d);
      else if (x === this.toTag) await this._onMessage(event, d, via);
      else if (x === this.settingsTag) await this._onSettings(event);
    } catch (error) {
      this._countInvalid(`relay: ${error.message}`);
    }
  }

  async _onSettings(event) {
    const publisher = Uint8Array.from(event.pubkey.match(/../g), (h) => parseInt(h, 16));
    const settings = await decodeSettings(this.keys, publisher, await this.tags.settingsKey(),
      unb64(event.content, MAX_SETTINGS_BYTES));
    if (settings.tsMs - Date.now() > MAX_SETTINGS_FUTURE_MS) throw new Error("room settings dated ahead of our clock");
    if (settings.sfuRejected) this._countInvalid(`settings: ${settings.sfuRejected} (dropped; the rest is used)`);
    if (this.settings !== null && settings.tsMs <= this.settings.tsMs) return;
    this.settings = settings;
    this.events.settings?.(settings);
  }

  async _onPresence(event, d) {
    const nostrKey = Uint8Array.from(event.pubkey.match(/../g), (h) => parseInt(h, 16));
    const record = await decodePresenceRecord(this.keys, nostrKey, d, unb64(event.content, MAX_PRESENCE_RECORD_BYTES));
    const key = toHex(record.publicKey) + "/" + record.sessionId;
    if (record.member === null) {
      this._depart(key, record.tsMs);
      return;
    }
    this.authors.set(event.pubkey, key);
    this._record(record.member);
    const waiting = this.unmatched.filter((w) => w.event.pubkey === event.pubkey);
    this.unmatched = this.unmatched.filter((w) => w.event.pubkey !== event.pubkey);
    for (const w of waiting) await this._onMessage(w.event, tagValue(w.event, "d"), w.via);
  }

  async _onMessage(event, d, via) {
    const author = this.authors.get(event.pubkey);
    const member = author ? this.members.get(author) : undefined;
    if (!member) { // its presence record is on its way (or it is a stranger): wait a little
      if (!this.unmatched.some((w) => w.event.id === event.id)) {
        this.unmatched.push({ event, via });
        if (this.unmatched.length > MAX_UNMATCHED) this.unmatched.shift();
      }
      return;
    }
    const dataKey = await this.tags.pairKey(member.sessionId, this.sessionId);
    if (d !== toHex(dataKey)) throw new Error("message d tag is not this pair's");
    const body = await decodeMessage(this.keys, member.publicKey, dataKey, unb64(event.content, MAX_MESSAGE_BYTES));
    if (body.from !== member.sessionId || body.to !== this.sessionId) throw new Error("message addressed to another session");
    const key = memberKey(member);
    if (typeof body.ts !== "number" || body.ts <= (this.lastMessageTs.get(key) ?? -1)) return; // replay: newest wins
    this.lastMessageTs.set(key, body.ts);
    this.events.message(member, body, via);
  }
}
