// Byte helpers and the one error type of the protocol core (a record from the network that fails to
// open, verify or validate: dropped and counted by the caller, never fatal).

export class WireError extends Error {
  constructor(message) {
    super(message);
    this.name = "WireError";
  }
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function utf8(text) {
  return ENCODER.encode(text);
}

/** UTF-8 bytes to text; a WireError (naming `what`) for anything that is not valid UTF-8. */
export function fromUtf8(bytes, what = "text") {
  try {
    return DECODER.decode(bytes);
  } catch {
    throw new WireError(`${what} is not valid UTF-8`);
  }
}

export function concat(...parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function toHex(bytes) {
  let out = "";
  for (const b of bytes) out += HEX[b];
  return out;
}

/** Hex (either case, no separators) to bytes; `length` (bytes) is checked when given. */
export function fromHex(text, length = undefined, what = "hex field") {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new WireError(`${what} is not hex`);
  }
  if (length !== undefined && text.length !== 2 * length) {
    throw new WireError(`${what} is not ${length} bytes of hex`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
  return out;
}

/** An unsigned integer (number or BigInt) as 8 bytes, big- or little-endian. */
export function uint64(value, littleEndian = false) {
  const big = BigInt(value);
  if (big < 0n || big > 0xffffffffffffffffn) throw new RangeError(`${value} does not fit in 64 bits`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, big, littleEndian);
  return out;
}

export function randomBytes(length) {
  return crypto.getRandomValues(new Uint8Array(length));
}

/** Standard base64 with padding. */
export function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** Strict standard base64 (padding required, no whitespace), as Python's b64decode(validate=True). */
export function fromBase64(text, what = "base64") {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new WireError(`${what} is not base64`);
  }
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function toBase64Url(bytes) {
  return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Number of Unicode code points (Python's len of a str). */
export function codePoints(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}
