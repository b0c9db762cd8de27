// JSON from the network, as sdparta's Python reads it (tui/sdparta/safe_json.py): nesting bounded
// *before* parsing, integers told apart from floats (1.0 is not an integer), integers past 2^53 kept
// exact as BigInt. And the canonical JSON the Python side signs: sorted keys, no spaces, ASCII only
// (Python's json.dumps(sort_keys=True, separators=(",", ":")) with its default ensure_ascii).
import { WireError, fromUtf8, randomBytes, toHex } from "sdparta/bytes.js";

export const MAX_JSON_DEPTH = 8;

/** A JSON number written with a fraction or exponent: Python reads it as a float, never an int. */
export class JsonFloat {
  constructor(value) {
    this.value = value;
  }
}

/** Does the bracket nesting of `text` (outside strings) go deeper than `maxDepth`? */
export function depthExceeds(text, maxDepth) {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

const INTEGER = /^-?(0|[1-9][0-9]*)$/;

/** A number from its JSON source text: an int (safe), a BigInt (larger) or a JsonFloat. */
function number(source, value) {
  if (!INTEGER.test(source)) return new JsonFloat(value);
  if (Number.isSafeInteger(value)) return value === 0 ? 0 : value;
  return BigInt(source);
}

function revive(key, value, context) {
  return typeof value === "number" ? number(context.source, value) : value;
}

// Browsers without JSON.parse source text access (older Safari): numbers that are not safe integers
// are rewritten, outside strings, into strings with a marker before parsing, then revived. The marker
// is random per parse, so no string in the input can pass for a number.
const NUMBER_TOKEN = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

function markNumbers(text, mark) {
  let out = "";
  let last = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      NUMBER_TOKEN.lastIndex = i;
      const match = NUMBER_TOKEN.exec(text);
      if (!match) continue; // not JSON: JSON.parse says so
      const source = match[0];
      if (!INTEGER.test(source) || !Number.isSafeInteger(Number(source))) {
        out += text.slice(last, i) + '"' + mark + source + '"';
        last = i + source.length;
      }
      i += source.length - 1;
    }
  }
  return out + text.slice(last);
}

function reviveMarked(mark) {
  return (key, value) => {
    if (typeof value === "string" && value.startsWith(mark)) {
      const source = value.slice(mark.length);
      return number(source, Number(source));
    }
    return value;
  };
}

export const SOURCE_ACCESS = (() => {
  try {
    return JSON.parse("[1]", (k, v, context) => (k === "0" ? context?.source === "1" : v))[0] === true;
  } catch {
    return false;
  }
})();

/** JSON.parse with Python's number types; `sourceAccess` false forces the fallback (tests). */
export function parseNumbersExactly(text, sourceAccess = SOURCE_ACCESS) {
  if (sourceAccess) return JSON.parse(text, revive);
  const mark = "\\u0000" + toHex(randomBytes(16)) + ":"; // as JSON text; the parsed string starts with NUL
  return JSON.parse(markNumbers(text, mark), reviveMarked("\u0000" + mark.slice(6)));
}

/** Parse bytes (UTF-8) or text; WireError for anything that is not JSON or nests too deep. */
export function loadJson(raw, what = "JSON", maxDepth = MAX_JSON_DEPTH) {
  const text = typeof raw === "string" ? raw : fromUtf8(raw, what);
  if (depthExceeds(text, maxDepth)) throw new WireError(`${what} nests deeper than ${maxDepth} levels`);
  try {
    return parseNumbersExactly(text);
  } catch {
    throw new WireError(`${what} is not JSON`);
  }
}

export function isInt(value) {
  return typeof value === "number" && Number.isSafeInteger(value);
}

export function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof JsonFloat);
}

function compareCodePoints(a, b) {
  const x = Array.from(a, (ch) => ch.codePointAt(0));
  const y = Array.from(b, (ch) => ch.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

const SHORT = { 0x22: '\\"', 0x5c: "\\\\", 0x08: "\\b", 0x0c: "\\f", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t" };

function encodeString(text) {
  let out = '"';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (SHORT[c] !== undefined) out += SHORT[c];
    else if (c >= 0x20 && c <= 0x7e) out += text[i];
    else out += "\\u" + c.toString(16).padStart(4, "0");
  }
  return out + '"';
}

/** Canonical JSON text (ASCII): objects with sorted keys, integers only, no floats. */
export function canonicalJson(value) {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new TypeError("canonical JSON holds integers only");
    return String(value);
  }
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") return encodeString(value);
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort(compareCodePoints);
    return "{" + keys.map((k) => encodeString(k) + ":" + canonicalJson(value[k])).join(",") + "}";
  }
  throw new TypeError(`cannot encode a ${typeof value} as canonical JSON`);
}
