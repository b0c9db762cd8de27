// Skynet registry cryptography and skylinks, byte-compatible with skynet-js 4.x and
// tui/sdparta/store/crypto.py: entries are ed25519 signatures over blake2b-256(hashed data key ||
// length-prefixed data || uint64 LE revision); skylinks are 34 raw bytes as 46 characters of
// unpadded base64url; sdparta's portal roots a skylink in blake2b-256 of the content.
import { WireError, concat, fromHex, toBase64Url, uint64, utf8 } from "sdparta/bytes.js";
import { Identity, pbkdf2Sha256, verifySignature } from "sdparta/keys.js";
import { JsonFloat, isInt, isObject, loadJson } from "sdparta/json.js";
import { blake2b } from "@noble/hashes";

export const MAX_ENTRY_DATA = 113;
export const MAX_REVISION = 0xffffffffffffffffn;
export const SKYLINK_RAW_LEN = 34;
export const SKYLINK_LEN = 46;
export const SIGNATURE_LEN = 64;
const SKYLINK_RE = /^[A-Za-z0-9_-]{46}$/;
const MAX_ANSWER_CHARS = 4096; // a registry answer is a few hundred bytes of flat JSON

const blake2b256 = (data) => blake2b(data, { dkLen: 32 });

/** skynet-js genKeyPairFromSeed: PBKDF2-SHA256(seed, salt "", 1000 rounds, 32 bytes) as the ed25519 seed. */
export async function keyPairFromSeed(seed) {
  return Identity.fromSeed(await pbkdf2Sha256(utf8(seed), new Uint8Array(0), 1000));
}

/** The registry's revision as a BigInt, from a number, a BigInt or (skyd) a decimal string. */
export function parseRevision(value) {
  let big = null;
  if (typeof value === "bigint") big = value;
  else if (isInt(value)) big = BigInt(value);
  else if (typeof value === "string" && /^[0-9]{1,20}$/.test(value)) big = BigInt(value);
  if (big === null || big < 0n || big > MAX_REVISION) throw new WireError("registry answer has no valid uint64 revision");
  return big;
}

export function encodePrefixedBytes(data) {
  return concat(uint64(data.length, true), data);
}

/** skynet-js hashDataKey: blake2b-256 of the length-prefixed UTF-8 key. */
export function hashDataKey(key) {
  return blake2b256(encodePrefixedBytes(utf8(key)));
}

/** skynet-js hashRegistryEntry for an already hashed data key: what the entry signature covers. */
export function hashRegistryEntry(dataKey, data, revision) {
  if (dataKey.length !== 32) throw new WireError("a hashed data key has 32 bytes");
  return blake2b256(concat(dataKey, encodePrefixedBytes(data), uint64(parseRevision(revision), true)));
}

/** A signed entry {publicKey, dataKey, data, revision (BigInt), signature} from a keypair (Identity). */
export async function signEntry(keyPair, dataKey, data, revision) {
  if (data.length > MAX_ENTRY_DATA) throw new RangeError(`registry data is at most ${MAX_ENTRY_DATA} bytes`);
  const rev = parseRevision(revision);
  const signature = await keyPair.sign(hashRegistryEntry(dataKey, data, rev));
  return Object.freeze({ publicKey: keyPair.publicKey, dataKey, data, revision: rev, signature });
}

/** True when the entry is well formed (sizes, revision range) and its signature verifies. */
export async function verifyEntry(entry, maxData = MAX_ENTRY_DATA) {
  let revision;
  try {
    revision = parseRevision(entry.revision);
  } catch {
    return false;
  }
  if (entry.publicKey?.length !== 32 || entry.dataKey?.length !== 32 || entry.signature?.length !== 64 ||
      !(entry.data instanceof Uint8Array) || entry.data.length > maxData) {
    return false;
  }
  return verifySignature(entry.publicKey, entry.signature, hashRegistryEntry(entry.dataKey, entry.data, revision));
}

/** Every plausible decoding of a JSON byte field (hex, base64/base64url, an array of numbers). */
export function byteCandidates(value, maxLen) {
  if (Array.isArray(value)) {
    if (value.length <= maxLen && value.every((b) => isInt(b) && b >= 0 && b <= 255)) return [Uint8Array.from(value)];
    return [];
  }
  if (typeof value !== "string" || value.length > 4 * maxLen + 4) return [];
  const found = [];
  try {
    found.push(fromHex(value));
  } catch { /* not hex */ }
  const std = value.replace(/-/g, "+").replace(/_/g, "/");
  const padded = std + "=".repeat((4 - (std.length % 4)) % 4);
  if (/^[A-Za-z0-9+/]*={0,2}$/.test(padded) && padded.length % 4 === 0) {
    const raw = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    if (!found.some((f) => f.length === raw.length && f.every((b, i) => b === raw[i]))) found.push(raw);
  }
  return found.filter((raw) => raw.length <= maxLen);
}

/** Validate a registry JSON answer (GET or push; text or parsed) for the slot asked for, signature
 *  included (store/portal_json.py parse_entry). Throws WireError unless it verifies. */
export async function parseEntry(publicKey, dataKey, answer) {
  if (typeof answer === "string" && answer.length > MAX_ANSWER_CHARS) throw new WireError("registry answer too large");
  const body = typeof answer === "string" ? loadJson(answer, "registry answer") : answer;
  if (!isObject(body)) throw new WireError("registry answer is not a JSON object");
  const revision = parseRevision(body.revision);
  const type = body.type instanceof JsonFloat ? body.type.value : body.type;
  if (type !== undefined && type !== null && type !== 1) throw new WireError("unsupported registry entry type");
  const datas = byteCandidates(body.data ?? "", MAX_ENTRY_DATA);
  const signatures = byteCandidates(body.signature, SIGNATURE_LEN).filter((s) => s.length === SIGNATURE_LEN);
  if (!signatures.length) throw new WireError("registry answer has no 64-byte signature");
  for (const data of datas) {
    for (const signature of signatures) {
      const entry = { publicKey, dataKey, data, revision, signature };
      if (await verifyEntry(entry)) return Object.freeze(entry);
    }
  }
  throw new WireError("registry entry signature does not verify for the requested key " +
    "(the portal is broken or lying; entry ignored)");
}

/** 34 raw bytes → 46 characters of unpadded base64url. */
export function encodeSkylink(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== SKYLINK_RAW_LEN) throw new WireError("a skylink has 34 bytes");
  return toBase64Url(raw);
}

/** 46 characters of canonical base64url → 34 bytes (the 4 spare bits must be zero). */
export function decodeSkylink(skylink) {
  if (typeof skylink !== "string" || !SKYLINK_RE.test(skylink)) {
    throw new WireError("a skylink is 46 characters of base64url (A-Z a-z 0-9 - _)");
  }
  const raw = Uint8Array.from(atob(skylink.replace(/-/g, "+").replace(/_/g, "/") + "=="), (c) => c.charCodeAt(0));
  if (raw.length !== SKYLINK_RAW_LEN || encodeSkylink(raw) !== skylink) throw new WireError("skylink is not canonical base64url");
  return raw;
}

/** The content-addressed skylink sdparta's portal gives `data`: bitfield 0 + blake2b-256 root. */
export function skylinkForContent(data) {
  return encodeSkylink(concat(new Uint8Array(2), blake2b256(data)));
}

export function contentMatches(skylink, data) {
  return skylinkForContent(data) === skylink;
}
