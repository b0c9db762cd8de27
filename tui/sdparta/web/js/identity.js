// The page's persistent identity: an Ed25519 key made by WebCrypto as non-extractable (the page can
// sign with it, nobody can read it out, not even the page) and kept in IndexedDB, so the fingerprint
// others see survives reloads. Where IndexedDB is unavailable (some private modes) the identity lives
// only as long as the page, and the caller is told so.
import { Identity } from "sdparta/keys.js";

const DB_NAME = "sdparta";
const STORE = "identity";
const KEY = "default";

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function transact(db, mode, work) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

async function generate() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

/** {identity, persistent}: the stored identity, or a new one stored now. */
export async function loadIdentity() {
  let db = null;
  try {
    db = await openDb();
    const stored = await transact(db, "readonly", (store) => store.get(KEY));
    if (stored && stored.privateKey instanceof CryptoKey && stored.publicKey instanceof Uint8Array &&
        stored.publicKey.length === 32) {
      return { identity: new Identity(null, stored.publicKey, stored.privateKey), persistent: true };
    }
    const made = await generate();
    await transact(db, "readwrite", (store) => store.put(made, KEY));
    return { identity: new Identity(null, made.publicKey, made.privateKey), persistent: true };
  } catch (error) {
    console.info(`identity not stored (${error && error.message}): this page's fingerprint will change on reload`);
    const made = await generate();
    return { identity: new Identity(null, made.publicKey, made.privateKey), persistent: false };
  } finally {
    if (db) db.close();
  }
}
