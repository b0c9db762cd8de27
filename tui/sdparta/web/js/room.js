// One participant's presence in a room on a Skynet portal (docs/protocol.md §2–§6; the Python twin
// is tui/sdparta/room/session.py, slots.py, roster.py, presence.py): the presence list by
// compare-and-set, re-announce and expiry, sealed pair messages, push over the portal's websocket
// with a safety poll, or adaptive polling without it, the room's shared settings (§5a: the newest
// record, re-read on push, when a member appears and every 30 s). It knows nothing of WebRTC: it
// reports members seen and gone, messages and settings to its owner (`events`: memberSeen,
// memberGone, message, settings, invalid, alive).
import { WireError, equal, toHex } from "sdparta/bytes.js";
import { Identity } from "sdparta/keys.js";
import { signEntry } from "sdparta/skynet.js";
import { MAX_MEMBERS, MAX_MESSAGE_BYTES, MAX_PRESENCE_BYTES, MAX_SETTINGS_BYTES, decodeMessage, decodePresence,
  decodeSettings, encodeMessage, encodePresence, signMember } from "sdparta/wire.js";
import { RevisionConflict, StoreError } from "sdparta/portal.js";
import { Tasks, sleep } from "sdparta/tasks.js";

export const TIMING = Object.freeze({
  reannounce: 10000, reannounceRetry: 2000, ttl: 50000, pollFast: 150, pollSlow: 2000, pollPush: 15000,
  settingsReread: 30000,
});
const CLOCK_SKEW_MS = 10000;
const EPOCH_REVISION_LIMIT = 2n ** 63n;
const MAX_EPOCHS = 32;
const MAX_SESSIONS_PER_IDENTITY = 4;
const CAS_ATTEMPTS = 12;
/** Room settings dated further ahead of our clock than this are not taken (room/settings.py). */
export const MAX_SETTINGS_FUTURE_MS = 600000;

export const memberKey = (m) => toHex(m.publicKey) + "/" + m.sessionId;

export class PortalRoom {
  constructor(portal, keys, identity, name, sessionId, events, { push = true } = {}) {
    this.portal = portal;
    this.keys = keys;
    this.identity = identity;
    this.name = name;
    this.sessionId = sessionId;
    this.events = events;
    this.wantPush = push;
    this.ownKey = toHex(identity.publicKey) + "/" + sessionId;
    this.members = new Map(); // memberKey → member (freshest record)
    this.epoch = { presence: 0, settings: 0 };
    this.settings = null; // the newest record read (by its signed ts)
    this._settingsRead = null; // "epoch/skylink" last opened (unchanged content is not opened again)
    this._settingsReading = null;
    this.presenceRevision = -1n;
    this.presenceSkylink = new Uint8Array(0);
    this.lastPresence = [];
    this.presenceFull = false;
    this.incoming = new Map(); // memberKey → {revision, skylink}
    this.outgoing = new Map(); // memberKey → last revision written
    this.watched = new Set();
    this.pendingUntil = 0;
    this.invalid = 0;
    this.subscription = null;
    this.pushActive = false;
    this._presenceLock = Promise.resolve();
    this.settingsPushed = 0; // settings slot entries the portal pushed (each re-read)
    this.farewells = new Map(); // memberKey → {revision, entry}: a bye sealed, uploaded and signed ahead
    this.tasks = new Tasks();
  }

  get closing() {
    return this.tasks.stopped;
  }

  // ---------------------------------------------------------------- keys
  async _roomKeyPair() {
    if (!this._keyPair) this._keyPair = await Identity.fromSeed(this.keys.presenceSeed);
    return this._keyPair;
  }

  _presenceKey(epoch = this.epoch.presence) {
    return epoch === 0 ? this.keys.dataKey("presence") : this.keys.dataKey("presence", `epoch-${epoch}`);
  }

  _pairKey(from, to) {
    return this.keys.dataKey("pair", from, to);
  }

  // ---------------------------------------------------------------- lifecycle
  async start() {
    const roomKp = await this._roomKeyPair();
    const settings = this._readSettings();
    if (this.wantPush) {
      this.subscription = this.portal.subscribe((entry) => this._onPushed(entry).catch(() => {}));
      this.pushActive = await this.subscription.start();
      if (this.pushActive) {
        this.subscription.add(roomKp.publicKey, await this._presenceKey());
        this.subscription.add(roomKp.publicKey, await this._settingsKey());
      } else {
        this.subscription.close();
        this.subscription = null;
      }
    }
    await settings;
    await this._updatePresence(false);
    this._pollLoop();
    this._announceLoop();
    this.tasks.repeat("settings", () => TIMING.settingsReread * (0.8 + 0.2 * Math.random()), () => this._readSettings());
    this.tasks.every(1000, () => this.expireStale());
  }

  async leave() {
    this.tasks.stop();
    const byes = [...this.members.values()].map((m) => this.send(m, { type: "bye" }).catch(() => {}));
    await Promise.all(byes);
    try {
      await this._updatePresence(true);
    } catch { /* the portal may be gone: the record goes stale */ }
  }

  close() {
    this.tasks.stop();
    if (this.subscription) this.subscription.close();
  }

  /** Seal, upload and sign ahead the bye `message` to `member` at our pair slot's next revision, so a
   *  closing tab can send it with nothing left to compute (`sendFarewells`). */
  async prepareFarewell(member, message) {
    const key = memberKey(member);
    const dataKey = await this._pairKey(this.sessionId, member.sessionId);
    const revision = (this.outgoing.get(key) ?? -1) + 1;
    const blob = await encodeMessage(this.keys, this.identity, dataKey, message);
    const skylink = await this.portal.upload(blob);
    const entry = await signEntry(this.identity, dataKey, skylink, BigInt(revision));
    if ((this.outgoing.get(key) ?? -1) + 1 === revision) this.farewells.set(key, { revision, entry });
  }

  /** How many members a bye is prepared for (the tests wait for it before closing the tab). */
  get readyFarewells() {
    return this.farewells.size;
  }

  /** The tab is closing: the prepared byes still at their slot's next revision go out as keepalive
   *  requests (nothing here awaits: the page may be gone before any answer). */
  sendFarewells() {
    for (const [key, { revision, entry }] of this.farewells) {
      if ((this.outgoing.get(key) ?? -1) + 1 !== revision) continue;
      this.outgoing.set(key, revision);
      this.portal.setEntryKeepalive(entry);
    }
    this.farewells.clear();
    this.tasks.stop();
  }

  // ---------------------------------------------------------------- commands
  markPending(ms = 10000) {
    this.pendingUntil = Math.max(this.pendingUntil, performance.now() + ms);
    this.tasks.wake("poll");
  }

  kick() {
    if (this.subscription) this.subscription.reconnect();
  }

  async watch(member, active) {
    const key = memberKey(member);
    if (!active) {
      this.watched.delete(key);
      return;
    }
    this.watched.add(key);
    if (this.subscription) this.subscription.add(member.publicKey, await this._pairKey(member.sessionId, this.sessionId));
    await this._readPairSlot(member);
  }

  /** Seal, sign and publish a message in our pair slot to `member` (newest wins). */
  async send(member, body) {
    await this.publish(member, { v: 1, from: this.sessionId, to: member.sessionId, name: this.name, ts: Date.now(), ...body });
  }

  /** A full message exactly as given (a combined room sends the same bytes over every network). */
  async publish(member, message) {
    const dataKey = await this._pairKey(this.sessionId, member.sessionId);
    const blob = await encodeMessage(this.keys, this.identity, dataKey, message);
    const skylink = await this.portal.upload(blob);
    const key = memberKey(member);
    const revision = (this.outgoing.get(key) ?? -1) + 1;
    this.outgoing.set(key, revision);
    this.farewells.delete(key); // prepared for the revision just taken
    await this.portal.setEntry(await signEntry(this.identity, dataKey, skylink, BigInt(revision)));
  }

  // ---------------------------------------------------------------- settings (§5a)
  _settingsKey(epoch = this.epoch.settings) {
    return epoch === 0 ? this.keys.dataKey("settings") : this.keys.dataKey("settings", `epoch-${epoch}`);
  }

  /** Read the settings slot (or take a pushed entry of it) and adopt a record newer than ours (session.py
   *  _read_settings): readers converge on the newest. Unchanged content is not opened again; trouble
   *  never stops a join (junk is counted). */
  async _readSettings(entry = null) {
    try {
      const roomKp = await this._roomKeyPair();
      if (entry === null) {
        for (let i = 0; i < MAX_EPOCHS; i++) {
          entry = await this.portal.getEntry(roomKp.publicKey, await this._settingsKey());
          if (entry === null || entry.revision < EPOCH_REVISION_LIMIT) break;
          await this._moveSettingsEpoch(roomKp);
        }
      } else if (entry.revision >= EPOCH_REVISION_LIMIT) { // pushed: the slot was abandoned
        await this._moveSettingsEpoch(roomKp);
        return this._readSettings();
      }
      if (entry === null) return;
      const read = `${this.epoch.settings}/${toHex(entry.data)}`;
      if (read === this._settingsRead) return;
      this._settingsRead = read;
      if (entry.data.length !== 34) throw new WireError("settings slot data is not a skylink");
      const blob = await this.portal.download(entry.data, MAX_SETTINGS_BYTES);
      const settings = await decodeSettings(this.keys, roomKp.publicKey, await this._settingsKey(), blob);
      if (settings.tsMs - Date.now() > MAX_SETTINGS_FUTURE_MS) throw new WireError("room settings dated ahead of our clock");
      if (settings.sfuRejected) this._countInvalid(`settings: ${settings.sfuRejected} (dropped; the rest is used)`);
      if (this.settings !== null && settings.tsMs <= this.settings.tsMs) return;
      this.settings = settings;
      this.events.settings?.(settings);
    } catch (error) {
      if (error instanceof WireError) this._countInvalid(`settings: ${error.message}`);
      else this._settingsRead = null; // the portal failed us (or we did): read it again next time
    }
  }

  async _moveSettingsEpoch(roomKp) {
    const old = await this._settingsKey();
    this.epoch.settings++;
    if (this.subscription) {
      this.subscription.add(roomKp.publicKey, await this._settingsKey());
      this.subscription.remove(roomKp.publicKey, old);
    }
  }

  /** A newcomer may have shared settings just before announcing itself (sharers write them first):
   *  read them again (one read at a time; unchanged content costs one registry read). */
  _rereadSettingsSoon() {
    if (this.closing || this._settingsReading) return;
    this._settingsReading = this._readSettings().finally(() => {
      this._settingsReading = null;
    });
  }

  // ---------------------------------------------------------------- presence
  fresh(member, marginMs = 0) {
    return Date.now() - member.tsMs <= TIMING.ttl - marginMs;
  }

  _countInvalid(reason) {
    this.invalid++;
    this.events.invalid?.(reason);
  }

  /** The live entry of the presence slot, walking past abandoned epochs. */
  async _liveEntry() {
    const roomKp = await this._roomKeyPair();
    for (let i = 0; i < MAX_EPOCHS; i++) {
      const entry = await this.portal.getEntry(roomKp.publicKey, await this._presenceKey());
      if (entry === null || entry.revision < EPOCH_REVISION_LIMIT) return entry;
      const old = await this._presenceKey();
      this.epoch.presence++;
      this.presenceRevision = -1n;
      if (this.subscription) {
        this.subscription.add(roomKp.publicKey, await this._presenceKey());
        this.subscription.remove(roomKp.publicKey, old);
      }
    }
    throw new StoreError("the room's presence slots are exhausted: use another room name or password");
  }

  /** The members in exactly this entry; null when its content cannot be used (counted). */
  async _membersIn(entry) {
    if (equal(entry.data, this.presenceSkylink)) return [...this.lastPresence];
    try {
      if (entry.data.length !== 34) throw new WireError("presence slot data is not a skylink");
      const roomKp = await this._roomKeyPair();
      const blob = await this.portal.download(entry.data, MAX_PRESENCE_BYTES);
      const { members, rejected } = await decodePresence(this.keys, roomKp.publicKey, await this._presenceKey(), blob);
      for (let i = 0; i < rejected; i++) this._countInvalid("presence: a member record failed to verify");
      return members;
    } catch (error) {
      if (!(error instanceof WireError)) throw error;
      this._countInvalid(`presence: ${error.message}`);
      return null;
    }
  }

  _rememberPresence(entry, members) {
    if (entry.revision <= this.presenceRevision) return false;
    this.presenceRevision = entry.revision;
    if (members === null) return false;
    this.presenceSkylink = entry.data;
    this.lastPresence = members;
    this.presenceFull = members.length >= MAX_MEMBERS;
    return true;
  }

  async _fetchPresence(entry = null) {
    if (entry === null || entry.revision >= EPOCH_REVISION_LIMIT) entry = await this._liveEntry();
    if (entry === null) return this.presenceRevision < 0n && !this.lastPresence.length ? [] : null;
    if (entry.revision <= this.presenceRevision) return null;
    const unchanged = equal(entry.data, this.presenceSkylink);
    const members = await this._membersIn(entry);
    if (!this._rememberPresence(entry, members) || unchanged) return null;
    return members;
  }

  /** The whole list the portal holds: members missing from it have left (or, stale, are gone). */
  _applyList(members) {
    const listed = new Map();
    for (const m of members) if (memberKey(m) !== this.ownKey && this.fresh(m)) listed.set(memberKey(m), m);
    for (const [key, m] of [...this.members]) {
      if (listed.has(key) || (this.presenceFull && this.fresh(m))) continue;
      if (this.fresh(m, CLOCK_SKEW_MS)) this._drop(m, "left", "left the room");
      else this._drop(m, "gone", "stopped announcing (crashed or lost its network)");
    }
    for (const m of listed.values()) this._record(m);
  }

  _record(member) {
    const key = memberKey(member);
    if (key === this.ownKey || !this.fresh(member)) return;
    const known = this.members.get(key);
    if (known && known.tsMs >= member.tsMs) return;
    this.members.set(key, member);
    if (!known) {
      this.markPending();
      this._rereadSettingsSoon();
      this.events.memberSeen(member);
    }
  }

  _drop(member, status, reason) {
    const key = memberKey(member);
    this.members.delete(key);
    this.watched.delete(key);
    this.events.memberGone(member, status, reason);
  }

  expireStale() {
    for (const m of [...this.members.values()]) {
      if (!this.fresh(m)) this._drop(m, "gone", "stopped announcing (crashed or lost its network)");
    }
  }

  /** Our record first, then members heard on live connections, then the freshest others. */
  _listToWrite(current, own) {
    const newest = new Map();
    for (const m of [...current, ...[...this.members.values()].filter((x) => this.events.alive(x))]) {
      const key = memberKey(m);
      const known = newest.get(key);
      if (key !== this.ownKey && this.fresh(m) && (!known || m.tsMs > known.tsMs)) newest.set(key, m);
    }
    const live = (m) => this.events.alive(m);
    const result = own ? [own] : [];
    const perIdentity = new Map([[toHex(this.identity.publicKey), 1]]);
    const sorted = [...newest.values()].sort((a, b) => (live(b) - live(a)) || (b.tsMs - a.tsMs));
    for (const m of sorted) {
      if (result.length >= MAX_MEMBERS) break;
      const id = toHex(m.publicKey);
      const count = perIdentity.get(id) || 0;
      if (count < MAX_SESSIONS_PER_IDENTITY) {
        perIdentity.set(id, count + 1);
        result.push(m);
      }
    }
    return result;
  }

  /** Read-modify-write of the presence list, compare-and-set on the revision, retried on conflict. */
  _updatePresence(leaving) {
    const run = this._presenceLock.then(() => this._casPresence(leaving));
    this._presenceLock = run.catch(() => {});
    return run;
  }

  async _casPresence(leaving) {
    const roomKp = await this._roomKeyPair();
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const entry = await this._liveEntry();
      const dataKey = await this._presenceKey();
      let current = [...this.lastPresence];
      if (entry !== null) {
        const members = await this._membersIn(entry);
        this._rememberPresence(entry, members);
        current = members !== null ? members : [...this.lastPresence];
      }
      if (!leaving && (entry === null || entry.revision >= this.presenceRevision)) this._applyList(current);
      const own = leaving ? null : await signMember(this.keys, this.identity, this.sessionId, this.name, Date.now());
      const written = this._listToWrite(current, own);
      const blob = await encodePresence(this.keys, roomKp.publicKey, dataKey, written);
      const skylink = await this.portal.upload(blob);
      const revision = entry === null ? 0n : entry.revision + 1n;
      const signed = await signEntry(roomKp, dataKey, skylink, revision);
      try {
        await this.portal.setEntry(signed);
      } catch (error) {
        if (!(error instanceof RevisionConflict)) throw error;
        await sleep((5 + Math.random() * 45) * (attempt + 1));
        continue;
      }
      this._rememberPresence(signed, written);
      return;
    }
    throw new StoreError(`could not update the room's presence after ${CAS_ATTEMPTS} attempts`);
  }

  // ---------------------------------------------------------------- pair slots
  async _readPairSlot(member, entry = null) {
    const key = memberKey(member);
    const dataKey = await this._pairKey(member.sessionId, this.sessionId);
    let state = this.incoming.get(key);
    if (!state) {
      state = { revision: -1n, skylink: new Uint8Array(0) };
      this.incoming.set(key, state);
    }
    if (entry === null) entry = await this.portal.getEntry(member.publicKey, dataKey);
    if (entry === null || entry.revision <= state.revision) return;
    const before = [state.revision, state.skylink];
    state.revision = entry.revision;
    if (equal(entry.data, state.skylink)) return;
    state.skylink = entry.data;
    let body;
    try {
      if (entry.data.length !== 34) throw new WireError("pair slot data is not a skylink");
      const blob = await this.portal.download(entry.data, MAX_MESSAGE_BYTES);
      body = await decodeMessage(this.keys, member.publicKey, dataKey, blob);
    } catch (error) {
      if (error instanceof StoreError) {
        if (state.revision === entry.revision) [state.revision, state.skylink] = before;
        throw error;
      }
      if (!(error instanceof WireError)) throw error;
      this._countInvalid(`message: ${error.message}`);
      return;
    }
    if (state.revision !== entry.revision) return; // a newer message was read meanwhile
    if (body.from !== member.sessionId || body.to !== this.sessionId) {
      this._countInvalid("message: addressed to another session (replayed?)");
      return;
    }
    this.events.message(member, body);
  }

  async _onPushed(entry) {
    const roomKp = await this._roomKeyPair();
    if (equal(entry.publicKey, roomKp.publicKey) && equal(entry.dataKey, await this._presenceKey())) {
      const members = await this._fetchPresence(entry);
      if (members !== null) this._applyList(members);
      return;
    }
    if (equal(entry.publicKey, roomKp.publicKey) && equal(entry.dataKey, await this._settingsKey())) {
      this.settingsPushed++;
      await this._readSettings(entry);
      return;
    }
    for (const member of [...this.members.values()]) {
      if (equal(member.publicKey, entry.publicKey) &&
          equal(entry.dataKey, await this._pairKey(member.sessionId, this.sessionId))) {
        await this._readPairSlot(member, entry);
        return;
      }
    }
  }

  // ---------------------------------------------------------------- loops
  async _pollOnce() {
    const guarded = (p) => p.catch(() => {});
    const presence = async () => {
      const members = await this._fetchPresence();
      if (members !== null) this._applyList(members);
    };
    const watched = [...this.members.values()].filter((m) => this.watched.has(memberKey(m)));
    await Promise.all([guarded(presence()), ...watched.map((m) => guarded(this._readPairSlot(m)))]);
    this.expireStale();
  }

  _pollLoop() {
    let interval = TIMING.pollFast;
    this.tasks.repeat("poll", () => interval, async () => {
      await this._pollOnce().catch(() => {});
      const pending = performance.now() < this.pendingUntil;
      const pushing = this.subscription && this.subscription.open;
      if (pushing) interval = TIMING.pollPush;
      else if (pending) interval = TIMING.pollFast;
      else interval = Math.min(TIMING.pollSlow, Math.max(interval, TIMING.pollFast) * 2);
    }, { first: "step" });
  }

  _announceLoop() {
    let failed = false;
    const period = () => (failed ? TIMING.reannounceRetry : TIMING.reannounce) * (0.8 + 0.2 * Math.random());
    this.tasks.repeat("re-announce", period, async () => {
      try {
        await this._updatePresence(false);
        failed = false;
      } catch {
        failed = true;
      }
      this.expireStale();
    });
  }
}
