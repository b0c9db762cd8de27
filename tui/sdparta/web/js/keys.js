// Room keys (from room name + password) and participant identities, docs/protocol.md §1, with
// WebCrypto: PBKDF2-SHA256, HKDF-Expand as one HMAC-SHA256 (WebCrypto's HKDF always extracts
// first), HMAC-SHA256 data keys, Ed25519 identities (a seed imports as PKCS#8).
import { WireError, concat, fromHex, randomBytes, toHex, utf8 } from "sdparta/bytes.js";
import { sha256 } from "@noble/hashes";

export const PROTOCOL_VERSION = 1;
export const KDF_ITERATIONS = 600000;
export const KDF_SALT = utf8("sdparta/room/v1");
const PKCS8_ED25519_PREFIX = fromHex("302e020100300506032b657004220420");
const subtle = () => {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Error("WebCrypto is not available: open the page over https:// or http://127.0.0.1 (a secure context)");
  }
  return crypto.subtle;
};

async function hmacSha256(key, message) {
  const k = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", k, message));
}

/** HKDF-Expand-SHA256 for at most 32 bytes: T(1) = HMAC(prk, info || 0x01). */
export async function hkdfExpand(prk, info, length = 32) {
  if (length > 32) throw new RangeError("one HKDF-Expand block gives at most 32 bytes");
  return (await hmacSha256(prk, concat(info, Uint8Array.of(1)))).slice(0, length);
}

export async function pbkdf2Sha256(password, salt, iterations, length = 32) {
  const key = await subtle().importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
  const bits = await subtle().deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, length * 8);
  return new Uint8Array(bits);
}

const aesKeys = new WeakMap(); // RoomKeys → Promise<CryptoKey>

/** The secrets everyone holding the room name and password computes (RoomKeys in keys.py). */
export class RoomKeys {
  constructor({ sealKey, tagKey, presenceSeed, roomId }) {
    this.sealKey = sealKey;
    this.tagKey = tagKey;
    this.presenceSeed = presenceSeed;
    this.roomId = roomId;
    Object.freeze(this);
  }

  static async derive(room, password = "", iterations = KDF_ITERATIONS) {
    if (typeof room !== "string" || !room.trim()) throw new Error("the room name must not be empty");
    const secret = concat(utf8(room.normalize("NFC")), Uint8Array.of(0), utf8(password.normalize("NFC")));
    const master = await pbkdf2Sha256(secret, KDF_SALT, iterations);
    const expand = (label, length = 32) => hkdfExpand(master, utf8(label), length);
    return new RoomKeys({
      sealKey: await expand("sdparta/v1/seal"),
      tagKey: await expand("sdparta/v1/tag"),
      presenceSeed: await expand("sdparta/v1/presence"),
      roomId: await expand("sdparta/v1/room-id", 16),
    });
  }

  /** An opaque 32-byte registry data key for a label: HMAC-SHA256(tag_key, parts joined by "/"). */
  dataKey(...parts) {
    return hmacSha256(this.tagKey, utf8(parts.join("/")));
  }

  /** The room's AES-256-GCM key as a (non-extractable) CryptoKey, imported once. */
  aesKey() {
    let key = aesKeys.get(this);
    if (key === undefined) {
      key = subtle().importKey("raw", this.sealKey, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
      aesKeys.set(this, key);
    }
    return key;
  }
}

/** Short, human-comparable fingerprint: the first 16 hex digits of SHA-256(public key), in 4 groups. */
export function fingerprint(publicKey) {
  const digest = toHex(sha256(publicKey)).slice(0, 16);
  return digest.match(/.{4}/g).join(":");
}

/** An ed25519 keypair (a participant's identity, or a registry slot's key). */
export class Identity {
  constructor(seed, publicKey, privateKey) {
    this.seed = seed;
    this.publicKey = publicKey;
    this._private = privateKey;
    Object.freeze(this);
  }

  static async fromSeed(seed) {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new Error("an ed25519 seed has 32 bytes");
    const pkcs8 = concat(PKCS8_ED25519_PREFIX, seed);
    const exportable = await subtle().importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await subtle().exportKey("jwk", exportable);
    const publicKey = Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
    const privateKey = await subtle().importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
    return new Identity(Uint8Array.from(seed), publicKey, privateKey);
  }

  static generate() {
    return Identity.fromSeed(randomBytes(32));
  }

  get fingerprint() {
    return fingerprint(this.publicKey);
  }

  async sign(message) {
    return new Uint8Array(await subtle().sign({ name: "Ed25519" }, this._private, message));
  }
}

const verifyKeys = new Map(); // hex public key → CryptoKey (bounded)

/** True when `signature` is a valid ed25519 signature of `message` by `publicKey`; never throws. */
export async function verifySignature(publicKey, signature, message) {
  if (!(publicKey instanceof Uint8Array) || !(signature instanceof Uint8Array)) return false;
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const id = toHex(publicKey);
  try {
    let key = verifyKeys.get(id);
    if (key === undefined) {
      key = await subtle().importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
      if (verifyKeys.size >= 512) verifyKeys.delete(verifyKeys.keys().next().value);
      verifyKeys.set(id, key);
    }
    return await subtle().verify({ name: "Ed25519" }, key, signature, message);
  } catch {
    return false;
  }
}

/** A random per-join session id (16 lowercase hex digits). */
export function newSessionId() {
  return toHex(randomBytes(8));
}

export const SESSION_ID = /^[0-9a-f]{16}$/;

export function checkSessionId(value, what = "session id") {
  if (typeof value !== "string" || !SESSION_ID.test(value)) throw new WireError(`${what} is not a session id`);
  return value;
}
