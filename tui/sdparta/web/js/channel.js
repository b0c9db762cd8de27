// The data channel's messages (docs/protocol.md §6; engine/peer.py parse_control, engine/negotiation.py
// on_control): JSON text ≤ 16 KiB, an object with a string "t". The channel runs over DTLS keyed by
// the signed SDP's fingerprints, so a message comes from that participant, but its content is still
// validated like any other input.
import { codePoints } from "sdparta/bytes.js";
import { JsonFloat, canonicalJson, isInt, isObject, loadJson } from "sdparta/json.js";
import { isPrintable } from "sdparta/wire.js";

export const CHANNEL_LABEL = "sdparta";
export const MAX_DATA_MESSAGE = 16 * 1024;
export const MAX_CHAT_CHARS = 2000;

/** One message as text (ASCII JSON, as the Python side writes), or null when it is over 16 KiB. */
export function encodeControl(message) {
  const text = canonicalJson(message);
  return text.length > MAX_DATA_MESSAGE ? null : text;
}

/** A received message (string or bytes) as an object with a string "t", or null when malformed. */
export function parseControl(raw) {
  const size = typeof raw === "string" ? (raw.length > MAX_DATA_MESSAGE ? codePoints(raw) : raw.length)
    : raw.byteLength;
  if (size === undefined || size > MAX_DATA_MESSAGE) return null;
  let message;
  try {
    message = loadJson(typeof raw === "string" ? raw : new Uint8Array(raw), "data channel message");
  } catch {
    return null;
  }
  return isObject(message) && typeof message.t === "string" ? message : null;
}

/** Python's bool() of a JSON value (an empty list or object is false, unlike JavaScript). */
export function truthy(value) {
  if (Array.isArray(value)) return value.length > 0;
  if (value instanceof JsonFloat) return value.value !== 0;
  if (typeof value === "bigint") return value !== 0n;
  if (isObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

/** A chat message's text as shown: printable characters only, at most 2000; null when not a chat. */
export function chatText(message) {
  if (message.t !== "chat" || typeof message.text !== "string") return null;
  return Array.from(message.text).filter(isPrintable).slice(0, MAX_CHAT_CHARS).join("");
}

/** A peer's state message as flags. */
export function peerState(message) {
  return { muted: truthy(message.muted), cameraOff: truthy(message.camera_off), audioOnly: truthy(message.audio_only) };
}

/** An ICE restart's offer/answer carried by {"t":"signal","body":…}. */
export function validSignal(body) {
  return isObject(body) && (body.type === "offer" || body.type === "answer") && typeof body.sdp === "string" &&
    isInt(body.gen);
}
