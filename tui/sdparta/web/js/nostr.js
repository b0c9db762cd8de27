// NIP-01 events (tui/sdparta/nostr/event.py): canonical serialization, id = SHA-256 of it, BIP-340
// signatures (noble secp256k1). Relays are not trusted: every event read goes through verifyEvent,
// which checks types, sizes, the id and the signature and throws InvalidEvent naming what was wrong.
import { fromHex, randomBytes, toHex, utf8 } from "sdparta/bytes.js";
import { depthExceeds, isInt, loadJson } from "sdparta/json.js";
import { sha256 } from "@noble/hashes";
import { schnorr } from "@noble/curves/secp256k1";

export const APP_DATA_KIND = 30078;
export const MAX_EVENT_DEPTH = 3;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const EVENT_KEYS = ["id", "pubkey", "created_at", "kind", "tags", "content", "sig"];
// C0 controls without a short JSON escape have no form every implementation agrees on: never built.
const AMBIGUOUS = /[\x00-\x07\x0b\x0e-\x1f]/;

export class InvalidEvent extends Error {
  constructor(reason, detail = "") {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = "InvalidEvent";
    this.reason = reason;
  }
}

export const DEFAULT_LIMITS = Object.freeze({
  maxContentLength: 128 * 1024, maxTags: 64, maxTagItems: 16, maxTagItemLength: 1024, maxEventBytes: 256 * 1024,
});

function checkLimits(limits, tags, content) {
  if (content.length > limits.maxContentLength) {
    throw new InvalidEvent("too-large", `content of ${content.length} characters > ${limits.maxContentLength}`);
  }
  if (tags.length > limits.maxTags) throw new InvalidEvent("too-large", `${tags.length} tags > ${limits.maxTags}`);
  for (const tag of tags) {
    if (tag.length > limits.maxTagItems) throw new InvalidEvent("too-large", `a tag of ${tag.length} items`);
    if (tag.some((item) => item.length > limits.maxTagItemLength)) {
      throw new InvalidEvent("too-large", `a tag item longer than ${limits.maxTagItemLength}`);
    }
  }
}

export function kindClass(kind) {
  if (kind >= 20000 && kind < 30000) return "ephemeral";
  if (kind >= 30000 && kind < 40000) return "addressable";
  if (kind === 0 || kind === 3 || (kind >= 10000 && kind < 20000)) return "replaceable";
  return "regular";
}

/** The canonical serialization [0,pubkey,created_at,kind,tags,content] as UTF-8 (NIP-01). */
export function serialize(pubkey, createdAt, kind, tags, content) {
  for (const text of [content, ...tags.flat()]) {
    if (!text.isWellFormed()) throw new InvalidEvent("malformed", "a string is not valid Unicode (lone surrogate)");
  }
  return utf8(JSON.stringify([0, pubkey, createdAt, kind, tags, content]));
}

export function computeId(pubkey, createdAt, kind, tags, content) {
  return toHex(sha256(serialize(pubkey, createdAt, kind, tags, content)));
}

function hex(value, pattern, what) {
  if (typeof value !== "string" || !pattern.test(value)) {
    throw new InvalidEvent("malformed", `${what} is not lowercase hex of the right length`);
  }
  return value;
}

function int(value, low, high, what) {
  if (!isInt(value) || value < low || value > high) {
    throw new InvalidEvent("malformed", `${what} is not an integer in ${low}..${high}`);
  }
  return value;
}

/** Check a parsed event object completely; returns a frozen copy or throws InvalidEvent (reasons:
 *  malformed, too-large, id-mismatch, bad-pubkey, bad-signature). */
export function verifyEvent(raw, limits = DEFAULT_LIMITS) {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw) || EVENT_KEYS.some((k) => !(k in raw))) {
    throw new InvalidEvent("malformed", "not an object with id, pubkey, created_at, kind, tags, content, sig");
  }
  const id = hex(raw.id, HEX64, "id");
  const pubkey = hex(raw.pubkey, HEX64, "pubkey");
  const sig = hex(raw.sig, HEX128, "sig");
  const createdAt = int(raw.created_at, 0, 2 ** 53 - 1, "created_at");
  const kind = int(raw.kind, 0, 65535, "kind");
  const { content, tags: rawTags } = raw;
  if (typeof content !== "string") throw new InvalidEvent("malformed", "content is not a string");
  if (!Array.isArray(rawTags)) throw new InvalidEvent("malformed", "tags");
  if (rawTags.length > limits.maxTags) throw new InvalidEvent("too-large", "tags");
  const tags = [];
  for (const tag of rawTags) {
    if (!Array.isArray(tag) || !tag.length || tag.length > limits.maxTagItems || !tag.every((i) => typeof i === "string")) {
      throw new InvalidEvent("malformed", "a tag is not a non-empty array of strings");
    }
    tags.push(Object.freeze([...tag]));
  }
  checkLimits(limits, tags, content);
  const canonical = serialize(pubkey, createdAt, kind, tags, content);
  if (canonical.length > limits.maxEventBytes) {
    throw new InvalidEvent("too-large", `${canonical.length} bytes > ${limits.maxEventBytes}`);
  }
  const digest = sha256(canonical);
  if (toHex(digest) !== id) throw new InvalidEvent("id-mismatch", "id is not the sha256 of the event's fields");
  let valid;
  try {
    valid = schnorr.verify(fromHex(sig), digest, fromHex(pubkey));
  } catch {
    valid = false;
  }
  if (!valid) {
    let onCurve = true;
    try {
      schnorr.utils.lift_x(BigInt("0x" + pubkey));
    } catch {
      onCurve = false;
    }
    if (!onCurve) throw new InvalidEvent("bad-pubkey", "pubkey is not a point on secp256k1");
    throw new InvalidEvent("bad-signature", "BIP-340 signature does not verify");
  }
  return Object.freeze({ id, pubkey, created_at: createdAt, kind, tags: Object.freeze(tags), content, sig });
}

/** Verify an event given as JSON text: size bounded before parsing, nesting bounded too. */
export function parseEvent(text, limits = DEFAULT_LIMITS) {
  if (typeof text !== "string" || text.length > limits.maxEventBytes * 2 + 4096) {
    throw new InvalidEvent("too-large", "event JSON too large");
  }
  if (depthExceeds(text, MAX_EVENT_DEPTH)) throw new InvalidEvent("malformed", `event nests deeper than ${MAX_EVENT_DEPTH} levels`);
  let obj;
  try {
    obj = loadJson(text, "event", MAX_EVENT_DEPTH);
  } catch (error) {
    throw new InvalidEvent("malformed", error.message);
  }
  return verifyEvent(obj, limits);
}

/** The first value of tag `name` of an event (null when absent or valueless). */
export function tagValue(event, name) {
  for (const tag of event.tags) if (tag[0] === name) return tag.length > 1 ? tag[1] : null;
  return null;
}

/** A secp256k1 key for one session (BIP-340 x-only public key). */
export class NostrKey {
  constructor(secret = undefined) {
    this._secret = secret === undefined ? schnorr.utils.randomSecretKey() : Uint8Array.from(secret);
    this.pubkey = toHex(schnorr.getPublicKey(this._secret)); // throws for an invalid scalar
    this._lastCreated = new Map();
  }

  get secret() {
    return Uint8Array.from(this._secret);
  }

  /** BIP-340 signature (hex) of a 32-byte message, with fresh auxiliary randomness. */
  sign(message32) {
    return toHex(schnorr.sign(message32, this._secret, randomBytes(32)));
  }

  /** A signed event; throws InvalidEvent when it exceeds `limits` (we never send what we'd refuse). */
  event(kind, content, tags = [], { createdAt = undefined, limits = DEFAULT_LIMITS } = {}) {
    int(kind, 0, 65535, "kind");
    const frozen = tags.map((tag) => Object.freeze(tag.map(String)));
    if (typeof content !== "string" || frozen.some((tag) => !tag.length)) {
      throw new InvalidEvent("malformed", "content must be a string and every tag non-empty");
    }
    if (AMBIGUOUS.test(content) || frozen.some((tag) => tag.some((item) => AMBIGUOUS.test(item)))) {
      throw new InvalidEvent("malformed", "a control character other than \\b \\t \\n \\f \\r has no canonical NIP-01 form");
    }
    checkLimits(limits, frozen, content);
    const when = createdAt === undefined ? Math.floor(Date.now() / 1000) : int(createdAt, 0, 2 ** 53 - 1, "created_at");
    const id = computeId(this.pubkey, when, kind, frozen, content);
    return Object.freeze({ id, pubkey: this.pubkey, created_at: when, kind, tags: Object.freeze(frozen), content,
      sig: this.sign(fromHex(id)) });
  }

  /** The next version of this key's record `d`; created_at always above the previous version's. */
  addressable(d, content, tags = [], { kind = APP_DATA_KIND, createdAt = undefined } = {}) {
    if (kindClass(kind) !== "addressable") throw new RangeError(`kind ${kind} is not addressable`);
    let when = createdAt === undefined ? Math.floor(Date.now() / 1000) : createdAt;
    const key = `${kind}:${d}`;
    when = Math.max(when, (this._lastCreated.get(key) ?? -1) + 1);
    this._lastCreated.set(key, when);
    return this.event(kind, content, [["d", d], ...tags], { createdAt: when });
  }
}
