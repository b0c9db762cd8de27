// The protocol core in one namespace (the UI and the tests import this).
export * as bytes from "sdparta/bytes.js";
export * as json from "sdparta/json.js";
export * as keys from "sdparta/keys.js";
export * as wire from "sdparta/wire.js";
export * as skynet from "sdparta/skynet.js";
export * as nostr from "sdparta/nostr.js";
export * as nostrWire from "sdparta/nostr_wire.js";
export * as identicon from "sdparta/identicon.js";
export * as channel from "sdparta/channel.js";
