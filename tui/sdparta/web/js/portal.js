// A Skynet-API portal as the page's store (tui/sdparta/store/portal_client.py and push.py): registry
// reads and compare-and-set writes, skyfile uploads and downloads (content-checked), and the portal's
// registry subscription websocket. Every entry read or pushed is verified (skynet.parseEntry).
import { WireError, toHex } from "sdparta/bytes.js";
import { decodeSkylink, encodeSkylink, parseEntry, skylinkForContent } from "sdparta/skynet.js";

export class StoreError extends Error {
  constructor(message) {
    super(message);
    this.name = "StoreError";
  }
}

/** The portal refused a revision that does not grow: someone wrote the slot first. */
export class RevisionConflict extends StoreError {
  constructor(message) {
    super(message);
    this.name = "RevisionConflict";
  }
}

const REQUEST_TIMEOUT_MS = 10000;

async function timed(url, options = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { ...options, signal: controller.signal, cache: "no-store" });
  } catch (error) {
    throw new StoreError(`portal unreachable: ${error.name === "AbortError" ? "timed out" : error.message}`);
  } finally {
    clearTimeout(timer);
  }
}

async function readLimited(response, maxSize) {
  const declared = Number(response.headers.get("content-length") || "0");
  if (declared > maxSize) throw new WireError(`skyfile too large (${declared} > ${maxSize} bytes)`);
  const body = new Uint8Array(await response.arrayBuffer());
  if (body.length > maxSize) throw new WireError(`skyfile too large (${body.length} > ${maxSize} bytes)`);
  return body;
}

function entryBody(entry) {
  return `{"publickey":{"algorithm":"ed25519","key":[${Array.from(entry.publicKey)}]},` +
    `"datakey":"${toHex(entry.dataKey)}","revision":${entry.revision.toString()},` +
    `"data":[${Array.from(entry.data)}],"signature":[${Array.from(entry.signature)}]}`;
}

export class Portal {
  constructor(url) {
    this.url = url.replace(/\/+$/, "");
    this.gets = 0;
    this.sets = 0;
  }

  /** The verified entry of a slot, or null when there is none. */
  async getEntry(publicKey, dataKey, timeoutMs = REQUEST_TIMEOUT_MS) {
    this.gets++;
    const query = `publickey=ed25519:${toHex(publicKey)}&datakey=${toHex(dataKey)}`;
    const response = await timed(`${this.url}/skynet/registry?${query}`, {}, timeoutMs);
    if (response.status === 404) return null;
    if (!response.ok) throw new StoreError(`registry read failed (${response.status})`);
    return parseEntry(publicKey, dataKey, await response.text());
  }

  /** Write a signed entry (skynet-js's JSON body); RevisionConflict when the revision does not grow. */
  async setEntry(entry) {
    this.sets++;
    const body = entryBody(entry);
    const response = await timed(`${this.url}/skynet/registry`, {
      method: "POST", body, headers: { "Content-Type": "application/json" },
    });
    if (response.ok) return;
    let message = "";
    try {
      message = String((await response.json()).message || "");
    } catch { /* no JSON */ }
    if (response.status === 400 && /revision/i.test(message)) throw new RevisionConflict(message);
    throw new StoreError(`registry write refused (${response.status}): ${message.slice(0, 200)}`);
  }

  /** Write a signed entry from a closing tab: a keepalive request (the browser sends it even when the
   *  page is gone; nobody reads the answer). */
  setEntryKeepalive(entry) {
    this.sets++;
    try {
      fetch(`${this.url}/skynet/registry`, { method: "POST", body: entryBody(entry), keepalive: true,
        headers: { "Content-Type": "application/json" }, cache: "no-store" }).catch(() => {});
    } catch { /* over the keepalive budget: the record goes stale instead */ }
  }

  /** Upload a blob; the raw 34-byte skylink (checked against the content). */
  async upload(blob) {
    const form = new FormData();
    form.append("file", new Blob([blob], { type: "application/octet-stream" }), "blob");
    const response = await timed(`${this.url}/skynet/skyfile`, { method: "POST", body: form });
    if (!response.ok) throw new StoreError(`upload refused (${response.status})`);
    const answer = await response.json();
    const expected = skylinkForContent(blob);
    if (answer.skylink !== expected) throw new StoreError("the portal answered an upload with a wrong skylink");
    return decodeSkylink(expected);
  }

  /** Download the skyfile of a raw skylink; its content must hash to the skylink. */
  async download(rawSkylink, maxSize) {
    const skylink = encodeSkylink(rawSkylink);
    const response = await timed(`${this.url}/${skylink}`);
    if (response.status === 404) throw new WireError("the portal does not have this skyfile");
    if (!response.ok) throw new StoreError(`download failed (${response.status})`);
    const data = await readLimited(response, maxSize);
    if (skylinkForContent(data) !== skylink) throw new WireError("skyfile content does not match its skylink");
    return data;
  }

  /** The registry subscription websocket (null when the portal has none). */
  subscribe(onEntry) {
    return new Subscription(this.url, onEntry);
  }
}

/** The portal's push socket: reconnects with backoff and re-subscribes every slot (the portal then
 *  pushes the current values, so nothing written during an outage is missed). */
export class Subscription {
  constructor(url, onEntry) {
    this.wsUrl = url.replace(/^http/, "ws") + "/skynet/registry/subscription";
    this.onEntry = onEntry;
    this.slots = new Map(); // "pk/dk" hex → [publicKey, dataKey]
    this.ws = null;
    this.open = false;
    this.closed = false;
    this.delay = 250;
    this.everOpened = false;
    this.failures = 0;
  }

  /** Resolves true once the socket is open, false when the portal has no push (or is unreachable). */
  start() {
    return new Promise((resolve) => {
      let settled = false;
      const settle = (value) => {
        if (!settled) {
          settled = true;
          resolve(value);
        }
      };
      this._connect(settle);
      setTimeout(() => settle(false), 5000);
    });
  }

  _connect(settle = () => {}) {
    if (this.closed) return;
    let ws;
    try {
      ws = new WebSocket(this.wsUrl);
    } catch {
      settle(false);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.open = true;
      this.everOpened = true;
      this.delay = 250;
      for (const [pk, dk] of this.slots.values()) this._send("subscribe", pk, dk);
      settle(true);
    };
    ws.onmessage = (event) => this._handle(event.data);
    ws.onclose = () => {
      this.open = false;
      settle(false);
      if (this.closed || !this.everOpened) return;
      setTimeout(() => this._connect(), this.delay * (0.5 + Math.random()));
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  reconnect() {
    if (this.ws && this.ws.readyState <= 1) this.ws.close();
  }

  _send(action, publicKey, dataKey) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify({ action, pubkey: "ed25519:" + toHex(publicKey), datakey: toHex(dataKey) }));
    }
  }

  add(publicKey, dataKey) {
    const id = toHex(publicKey) + "/" + toHex(dataKey);
    if (this.slots.has(id)) return;
    this.slots.set(id, [publicKey, dataKey]);
    this._send("subscribe", publicKey, dataKey);
  }

  remove(publicKey, dataKey) {
    const id = toHex(publicKey) + "/" + toHex(dataKey);
    if (!this.slots.delete(id)) return;
    this._send("unsubscribe", publicKey, dataKey);
  }

  async _handle(raw) {
    if (typeof raw !== "string" || raw.length > 16 * 1024) return;
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      return;
    }
    if (!body || typeof body !== "object" || typeof body.pubkey !== "string" || typeof body.datakey !== "string") return;
    const id = body.pubkey.replace(/^ed25519:/, "").toLowerCase() + "/" + body.datakey.toLowerCase();
    const slot = this.slots.get(id);
    if (!slot) return;
    let entry;
    try {
      entry = await parseEntry(slot[0], slot[1], raw);
    } catch {
      this.failures++;
      return;
    }
    this.onEntry(entry);
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}
