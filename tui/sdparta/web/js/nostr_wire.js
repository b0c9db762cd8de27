// The room's records as Nostr events carry them (docs/protocol.md §8; room/nostr_wire.py): every tag
// is a room-keyed HMAC in hex, content is base64 of a sealed envelope (wire.js). A presence record is
// signed by the member's identity together with the Nostr key that publishes it, and sealed with that
// key and its own d tag as AAD, so nobody can re-publish it as theirs.
import { WireError, concat, fromBase64, fromHex, toBase64, toHex, uint64, utf8 } from "sdparta/bytes.js";
import { canonicalJson, isInt, isObject, loadJson } from "sdparta/json.js";
import { verifySignature } from "sdparta/keys.js";
import { SIG_LEN, openSealed, readableName, seal, signedName } from "sdparta/wire.js";

export const APP_KIND = 30078;
export const MAX_PRESENCE_RECORD_BYTES = 2048;
const SID = /^[0-9a-f]{16}$/;

/** The room's opaque tag values (hex of HMACs under the room's tag key); all async. */
export class RoomTags {
  constructor(keys) {
    this.keys = keys;
  }

  /** #x of every presence record of the room. */
  async room() {
    return toHex(await this.keys.dataKey("nostr", "room"));
  }

  async settings() {
    return toHex(await this.keys.dataKey("nostr", "settings"));
  }

  settingsKey() {
    return this.keys.dataKey("nostr", "settings");
  }

  /** #x of the pair messages addressed to one session. */
  async to(sessionId) {
    return toHex(await this.keys.dataKey("nostr", "to", sessionId));
  }

  async presenceD(sessionId) {
    return toHex(await this.presenceKey(sessionId));
  }

  presenceKey(sessionId) {
    return this.keys.dataKey("nostr", "presence", sessionId);
  }

  /** The same data key as the portal's pair slot: a pair message is sealed identically. */
  pairKey(fromSid, toSid) {
    return this.keys.dataKey("pair", fromSid, toSid);
  }
}

export function b64(raw) {
  return toBase64(raw);
}

/** Event content to bytes: bounded before decoding, strict base64. */
export function unb64(text, maxBytes) {
  if (typeof text !== "string") throw new WireError("event content is not base64");
  if (text.length > Math.floor((maxBytes * 4) / 3) + 4) throw new WireError(`event content too large (over ${maxBytes} bytes)`);
  return fromBase64(text, "event content");
}

function presenceSigningBytes(keys, publicKey, sessionId, nostrKey, name, tsMs) {
  return concat(utf8("sdparta/v1/nostr-presence"), Uint8Array.of(0), keys.roomId, publicKey, utf8(sessionId), nostrKey,
    uint64(tsMs), utf8(name));
}

/** Seal our presence (or leaving) record for the event published under `nostrKey` (32 bytes, x-only). */
export async function encodePresenceRecord(keys, identity, sessionId, nostrKey, name, tsMs,
  { leaving = false, nonce = undefined } = {}) {
  name = signedName(name);
  const signature = await identity.sign(presenceSigningBytes(keys, identity.publicKey, sessionId, nostrKey, name, tsMs));
  const body = { v: 1, pk: toHex(identity.publicKey), sid: sessionId, name, ts: tsMs, sig: toHex(signature), left: leaving };
  const dataKey = await new RoomTags(keys).presenceKey(sessionId);
  return seal(keys, "nostr-presence", nostrKey, dataKey, utf8(canonicalJson(body)), nonce);
}

/** Open one presence event's content: {publicKey, sessionId, tsMs, member (null when it left)}. */
export async function decodePresenceRecord(keys, nostrKey, dTag, blob) {
  const dataKey = fromHex(dTag, undefined, "presence d tag");
  if (dataKey.length !== 32) throw new WireError("presence d tag has the wrong length");
  const raw = await openSealed(keys, "nostr-presence", nostrKey, dataKey, blob, MAX_PRESENCE_RECORD_BYTES);
  const body = loadJson(raw, "presence record");
  if (!isObject(body) || body.v !== 1) throw new WireError("presence record has an unknown version");
  if (!["pk", "sig", "sid", "name", "ts", "left"].every((k) => k in body)) throw new WireError("presence record is malformed");
  let publicKey, sig;
  try {
    publicKey = fromHex(body.pk);
    sig = fromHex(body.sig);
  } catch {
    throw new WireError("presence record is malformed");
  }
  const { sid: sessionId, name, ts: tsMs, left } = body;
  if (typeof sessionId !== "string" || !SID.test(sessionId)) throw new WireError("bad session id");
  if ((await new RoomTags(keys).presenceD(sessionId)) !== dTag) {
    throw new WireError("presence record is for another session than its d tag");
  }
  if (!readableName(name) || typeof left !== "boolean") throw new WireError("bad name or flag");
  if (!isInt(tsMs) || tsMs < 0) throw new WireError("bad timestamp");
  if (sig.length !== SIG_LEN || !(await verifySignature(publicKey, sig,
    presenceSigningBytes(keys, publicKey, sessionId, nostrKey, name, tsMs)))) {
    throw new WireError("presence record signature does not verify (not this member's, or not for this key)");
  }
  const member = left ? null : Object.freeze({ publicKey, sessionId, name, tsMs, signature: sig });
  return Object.freeze({ publicKey, sessionId, tsMs, member });
}

/** The presence event of our session (kind 30078, d = its presence tag, x = the room tag). */
export async function presenceEvent(keys, nostrKey, sessionId, blob, createdAt = undefined) {
  const tags = new RoomTags(keys);
  return nostrKey.addressable(await tags.presenceD(sessionId), b64(blob), [["x", await tags.room()]], { createdAt });
}

/** A pair message event A→B: d = hex(data_key("pair", A, B)), x = the to-tag of B. */
export async function messageEvent(keys, nostrKey, fromSid, toSid, blob, createdAt = undefined) {
  const tags = new RoomTags(keys);
  return nostrKey.addressable(toHex(await tags.pairKey(fromSid, toSid)), b64(blob), [["x", await tags.to(toSid)]],
    { createdAt });
}

/** The room settings event: d and x are both the settings tag. */
export async function settingsEvent(keys, nostrKey, blob, createdAt = undefined) {
  const tag = await new RoomTags(keys).settings();
  return nostrKey.addressable(tag, b64(blob), [["x", tag]], { createdAt });
}
