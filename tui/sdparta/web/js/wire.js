// The room's wire format (docs/protocol.md §3–§5a; tui/sdparta/room/wire.py): sealed envelopes,
// signed pair messages, the presence list, room settings. Everything read from the network goes
// through openSealed / decodeMessage / decodePresence / decodeSettings, which bound sizes,
// authenticate and throw WireError for anything off.
import { WireError, codePoints, concat, fromHex, randomBytes, toHex, uint64, utf8 } from "sdparta/bytes.js";
import { canonicalJson, isInt, isObject, loadJson } from "sdparta/json.js";
import { SESSION_ID, verifySignature } from "sdparta/keys.js";

export const MAGIC = utf8("SDP1");
export const NONCE_LEN = 12;
export const SIG_LEN = 64;
export const MAX_MESSAGE_BYTES = 64 * 1024;
export const MAX_PRESENCE_BYTES = 128 * 1024;
export const MAX_SETTINGS_BYTES = 8 * 1024;
export const MAX_MEMBERS = 64;
export const MAX_NAME_CHARS = 48;
export const MAX_ROOM_TURN = 4;
export const MESSAGE_TYPES = new Set(["offer", "answer", "bye"]);
const TURN_URL = /^turns?:[A-Za-z0-9.\-[\]:]{1,200}(\?transport=(udp|tcp))?$/;
const MAX_TS = 2 ** 53; // exact in JavaScript; Python allows up to 2^63 (unix ms never get there)

const UNOPENED = {
  msg: "message was sealed for another slot (copied from another member's pair slot: a replay), or is corrupt",
  presence: "presence list does not open for this room's presence slot (junk or a list copied from another " +
    "slot, written by a faulty or hostile member)",
  settings: "room settings do not open for this room's settings slot (junk or copied from another slot)",
};

function aad(keys, kind, slotPublicKey, dataKey) {
  return concat(utf8("sdparta/v1/" + kind), Uint8Array.of(0), keys.roomId, slotPublicKey, dataKey);
}

function checkSlot(slotPublicKey, dataKey) {
  if (!(slotPublicKey instanceof Uint8Array) || slotPublicKey.length !== 32 ||
      !(dataKey instanceof Uint8Array) || dataKey.length !== 32) {
    throw new TypeError("a slot is a 32-byte public key and a 32-byte data key");
  }
}

/** "SDP1" || nonce || AES-256-GCM(seal_key, nonce, plaintext, aad): bound to its slot by the AAD. */
export async function seal(keys, kind, slotPublicKey, dataKey, plaintext, nonce = undefined) {
  checkSlot(slotPublicKey, dataKey);
  nonce = nonce === undefined ? randomBytes(NONCE_LEN) : nonce;
  if (nonce.length !== NONCE_LEN) throw new TypeError("a nonce has 12 bytes");
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: aad(keys, kind, slotPublicKey, dataKey), tagLength: 128 },
    await keys.aesKey(), plaintext);
  return concat(MAGIC, nonce, new Uint8Array(ciphertext));
}

/** The inverse of seal; WireError for anything that is not ours. */
export async function openSealed(keys, kind, slotPublicKey, dataKey, blob, maxSize) {
  checkSlot(slotPublicKey, dataKey);
  if (!(blob instanceof Uint8Array)) throw new WireError("a sealed blob is bytes");
  if (blob.length > maxSize) throw new WireError(`sealed blob too large (${blob.length} > ${maxSize} bytes)`);
  if (blob.length < MAGIC.length + NONCE_LEN + 16 || MAGIC.some((b, i) => blob[i] !== b)) {
    throw new WireError("not an sdparta v1 envelope");
  }
  const nonce = blob.subarray(MAGIC.length, MAGIC.length + NONCE_LEN);
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad(keys, kind, slotPublicKey, dataKey), tagLength: 128 },
      await keys.aesKey(), blob.subarray(MAGIC.length + NONCE_LEN));
    return new Uint8Array(plain);
  } catch {
    throw new WireError(UNOPENED[kind] || "envelope does not open for this slot");
  }
}

const NONPRINTABLE = /[\p{C}\p{Z}]/u;

/** Python's str.isprintable() for one code point: not Other (C*) nor Separator (Z*), but space is. */
export function isPrintable(ch) {
  return ch === " " || !NONPRINTABLE.test(ch);
}

/** Display names are short single-line printable text (exactly as clean_name in wire.py): printable
 *  characters, outer spaces stripped, cut at 48 characters and no space left at the end by the cut. */
export function cleanName(name) {
  const printable = Array.from(String(name)).filter(isPrintable).join("").replace(/^ +| +$/g, "");
  const cleaned = Array.from(printable).slice(0, MAX_NAME_CHARS).join("").replace(/ +$/, "");
  return cleaned || "anonymous";
}

/** The name we sign (cleanName: every name it makes reads back as itself). */
export function signedName(name) {
  return cleanName(name);
}

const UNASSIGNED = /\p{Cn}/u;

/** A name as a record may carry it (readable_name in wire.py): what cleanName makes, also with
 *  characters this browser's Unicode does not know yet, so no member is dropped for our version. */
export function readableName(name) {
  if (typeof name !== "string") return false;
  const chars = Array.from(name);
  return chars.length > 0 && chars.length <= MAX_NAME_CHARS && name === name.replace(/^ +| +$/g, "")
    && chars.every((ch) => isPrintable(ch) || UNASSIGNED.test(ch));
}

// ------------------------------------------------------------------ pair messages (§4)
function messageSigningBytes(keys, dataKey, body) {
  return concat(utf8("sdparta/v1/msg"), Uint8Array.of(0), keys.roomId, dataKey, body);
}

/** Sign `body` (canonical JSON) with the author's identity and seal it for the author's pair slot. */
export async function encodeMessage(keys, author, dataKey, body, nonce = undefined) {
  const raw = utf8(canonicalJson(body));
  const signature = await author.sign(messageSigningBytes(keys, dataKey, raw));
  return seal(keys, "msg", author.publicKey, dataKey, concat(signature, raw), nonce);
}

/** Open, verify and validate one pair-slot message by `authorPublicKey`. */
export async function decodeMessage(keys, authorPublicKey, dataKey, blob) {
  const plain = await openSealed(keys, "msg", authorPublicKey, dataKey, blob, MAX_MESSAGE_BYTES);
  const signature = plain.subarray(0, SIG_LEN);
  const raw = plain.subarray(SIG_LEN);
  if (!(await verifySignature(authorPublicKey, signature, messageSigningBytes(keys, dataKey, raw)))) {
    throw new WireError("message signature does not verify");
  }
  const body = loadJson(raw, "message body");
  if (!isObject(body) || body.v !== 1) throw new WireError("message body has an unknown version");
  if (typeof body.type !== "string" || !MESSAGE_TYPES.has(body.type)) {
    throw new WireError(`unknown message type ${JSON.stringify(String(body.type).slice(0, 40))}`);
  }
  if ("name" in body && typeof body.name !== "string") throw new WireError("message field 'name' is not text");
  for (const field of ["from", "to"]) {
    if (typeof body[field] !== "string" || !SESSION_ID.test(body[field])) {
      throw new WireError(`message field '${field}' is not a session id`);
    }
  }
  if ("gen" in body && !isInt(body.gen)) throw new WireError("message field 'gen' is not an integer");
  if ("ts" in body && !isInt(body.ts)) throw new WireError("message field 'ts' is not an integer");
  if ((body.type === "offer" || body.type === "answer") && typeof body.sdp !== "string") {
    throw new WireError("offer/answer without an SDP");
  }
  return body;
}

// ------------------------------------------------------------------ presence list (§5)
function presenceSigningBytes(keys, publicKey, sessionId, name, tsMs) {
  return concat(utf8("sdparta/v1/presence"), Uint8Array.of(0), keys.roomId, publicKey, utf8(sessionId),
    uint64(tsMs), utf8(name));
}

/** A member record {publicKey, sessionId, name, tsMs, signature}, signed by `identity`. */
export async function signMember(keys, identity, sessionId, name, tsMs) {
  name = signedName(name);
  const signature = await identity.sign(presenceSigningBytes(keys, identity.publicKey, sessionId, name, tsMs));
  return Object.freeze({ publicKey: identity.publicKey, sessionId, name, tsMs, signature });
}

export async function encodePresence(keys, slotPublicKey, dataKey, members, nonce = undefined) {
  const body = {
    v: 1,
    members: members.map((m) => ({ pk: toHex(m.publicKey), sid: m.sessionId, name: m.name, ts: m.tsMs,
      sig: toHex(m.signature) })),
  };
  return seal(keys, "presence", slotPublicKey, dataKey, utf8(canonicalJson(body)), nonce);
}

function checkTs(ts) {
  if (!isInt(ts) || ts < 0 || ts >= MAX_TS) throw new WireError("bad timestamp");
}

async function decodeMember(keys, record) {
  if (!isObject(record)) throw new WireError("member record is not an object");
  const publicKey = fromHex(record.pk, 32, "member public key");
  const signature = fromHex(record.sig, SIG_LEN, "member signature");
  const { sid: sessionId, name, ts: tsMs } = record;
  if (typeof sessionId !== "string" || !SESSION_ID.test(sessionId)) throw new WireError("bad session id");
  if (!readableName(name)) throw new WireError("bad name");
  checkTs(tsMs);
  if (!(await verifySignature(publicKey, signature, presenceSigningBytes(keys, publicKey, sessionId, name, tsMs)))) {
    throw new WireError("member record signature does not verify");
  }
  return Object.freeze({ publicKey, sessionId, name, tsMs, signature });
}

/** Open the presence list: {members (valid, ≤ 64), rejected (records dropped)}. */
export async function decodePresence(keys, slotPublicKey, dataKey, blob) {
  const raw = await openSealed(keys, "presence", slotPublicKey, dataKey, blob, MAX_PRESENCE_BYTES);
  const body = loadJson(raw, "presence list");
  if (!isObject(body) || body.v !== 1 || !Array.isArray(body.members)) {
    throw new WireError("presence list has an unknown shape");
  }
  const members = [];
  let rejected = 0;
  for (const record of body.members.slice(0, MAX_MEMBERS * 2)) {
    try {
      members.push(await decodeMember(keys, record));
    } catch (error) {
      if (!(error instanceof WireError)) throw error;
      rejected++;
    }
  }
  return { members: members.slice(0, MAX_MEMBERS), rejected };
}

// ------------------------------------------------------------------ room settings (§5a)
function settingsSigningBytes(keys, dataKey, raw) {
  return concat(utf8("sdparta/v1/settings"), Uint8Array.of(0), keys.roomId, dataKey, raw);
}

/** The room's bounds on a carried SFU entry (room/wire.py check_sfu_entry): a JSON object of at most
 *  MAX_SFU_ENTRY_BYTES as canonical JSON, nesting at most MAX_SFU_ENTRY_DEPTH (the object is level 1). */
export const MAX_SFU_ENTRY_BYTES = 2048;
export const MAX_SFU_ENTRY_DEPTH = 2;

function depth(value) {
  if (Array.isArray(value)) return 1 + Math.max(0, ...value.map(depth));
  if (isObject(value)) return 1 + Math.max(0, ...Object.values(value).map(depth));
  return 0;
}

export function checkSfuEntry(value) {
  if (!isObject(value)) throw new WireError("the room's SFU entry is not an object");
  if (depth(value) > MAX_SFU_ENTRY_DEPTH) throw new WireError(`the room's SFU entry nests deeper than ${MAX_SFU_ENTRY_DEPTH} levels`);
  const size = canonicalJson(value).length; // ASCII escapes: characters are bytes
  if (size > MAX_SFU_ENTRY_BYTES) throw new WireError(`the room's SFU entry is ${size} bytes, more than ${MAX_SFU_ENTRY_BYTES}`);
  return value;
}

/** turn: [{url, username, credential}]; sfu: the room's SFU entry or null (then the key is absent). */
export async function encodeSettings(keys, author, slotPublicKey, dataKey, turn, tsMs, nonce = undefined, sfu = null) {
  const body = { v: 1, author: toHex(author.publicKey), ts: tsMs,
    turn: turn.map((t) => ({ url: t.url, username: t.username, credential: t.credential })) };
  if (sfu !== null) body.sfu = checkSfuEntry(sfu);
  const raw = utf8(canonicalJson(body));
  const signature = await author.sign(settingsSigningBytes(keys, dataKey, raw));
  return seal(keys, "settings", slotPublicKey, dataKey, concat(signature, raw), nonce);
}

/** Open, verify and validate the room settings: {author, tsMs, turn, sfu, sfuRejected}. An `sfu` value
 *  outside the room's bounds does not void the record: it is dropped (`sfuRejected` says why). */
export async function decodeSettings(keys, slotPublicKey, dataKey, blob) {
  const plain = await openSealed(keys, "settings", slotPublicKey, dataKey, blob, MAX_SETTINGS_BYTES);
  const signature = plain.subarray(0, SIG_LEN);
  const raw = plain.subarray(SIG_LEN);
  const body = loadJson(raw, "room settings");
  if (!isObject(body) || !("author" in body) || !("ts" in body) || !("turn" in body)) {
    throw new WireError("room settings are malformed");
  }
  const author = fromHex(body.author, undefined, "room settings author");
  const { ts: tsMs, turn: records } = body;
  if (body.v !== 1 || author.length !== 32 || !isInt(tsMs) || tsMs < 0 || !Array.isArray(records)) {
    throw new WireError("room settings have an unknown shape");
  }
  if (!(await verifySignature(author, signature, settingsSigningBytes(keys, dataKey, raw)))) {
    throw new WireError("room settings signature does not verify");
  }
  const turn = [];
  for (const record of records.slice(0, MAX_ROOM_TURN)) {
    if (!isObject(record)) throw new WireError("a room TURN entry is not an object");
    const { url, username, credential } = record;
    if (typeof url !== "string" || !TURN_URL.test(url)) throw new WireError("a room TURN entry has an invalid URL");
    if (typeof username !== "string" || typeof credential !== "string" || codePoints(username) > 256 ||
        codePoints(credential) > 256) {
      throw new WireError("a room TURN entry has invalid credentials");
    }
    turn.push(Object.freeze({ url, username, credential }));
  }
  let sfu = null;
  let sfuRejected = null;
  if (body.sfu !== undefined && body.sfu !== null) {
    try {
      sfu = Object.freeze(checkSfuEntry(body.sfu));
    } catch (error) {
      if (!(error instanceof WireError)) throw error;
      sfuRejected = error.message;
    }
  }
  return Object.freeze({ author, tsMs, turn: Object.freeze(turn), sfu, sfuRejected });
}


// ------------------------------------------------------------------ negotiation (§6)
function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Deterministic offerer of a pair: the smaller (public key, session id) offers, so there is no glare. */
export function offersFirst(ourKey, ourSession, member) {
  const byKey = compareBytes(ourKey, member.publicKey);
  if (byKey !== 0) return byKey < 0;
  return ourSession < member.sessionId; // session ids are lowercase hex: code unit order is Python's
}
