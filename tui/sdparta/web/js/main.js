// The page's entry module. For now it loads the protocol core and says whether this page can run
// (WebCrypto needs a secure context: https://, or http://127.0.0.1 / localhost); the UI comes later.
import * as core from "sdparta/core.js";

const app = document.getElementById("app");
const secure = globalThis.isSecureContext && globalThis.crypto && crypto.subtle;
const status = document.createElement("p");
status.id = "status";
status.textContent = secure
  ? `sdparta: protocol v${core.keys.PROTOCOL_VERSION} ready.`
  : "sdparta needs a secure context (https:// or http://127.0.0.1): this browser gives no WebCrypto here.";
app.replaceChildren(status);
document.documentElement.dataset.core = secure ? "ready" : "insecure";
