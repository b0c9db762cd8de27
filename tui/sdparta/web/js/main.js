// The page: a join form, then the call (tiles, participants, chat, controls). Preact + htm, no build
// step. The protocol lives in the core modules (core.js) and room.js / call.js; this is the UI.
import { h, render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";
import * as core from "sdparta/core.js";
import { Call } from "sdparta/call.js";
import { Hearing, LocalMedia } from "sdparta/media.js";
import { loadIdentity } from "sdparta/identity.js";
import { Portal } from "sdparta/portal.js";

const html = htm.bind(h);
const secure = Boolean(globalThis.isSecureContext && globalThis.crypto && crypto.subtle);
const SPEAKING_LEVEL = 0.02;
const NAME_KEY = "sdparta.name";
const ICE_KEY = "sdparta.ice";
/** The page's STUN server unless the user names others or none (engine/defaults.py PUBLIC_STUN, the
 *  terminal's): it tells each side its public address, so most calls across home routers connect. */
export const PUBLIC_STUN = "stun:stun.l.google.com:19302";
const STUN_URL = /^stuns?:[A-Za-z0-9.\-[\]:]{1,200}$/;

document.documentElement.dataset.core = secure ? "ready" : "insecure";

/** The join form's fields from the shareable link's fragment (#room=…&pw=…&name=…&ice=…; `ice=` present
 *  but empty: no STUN server at all). */
function fromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  return { room: params.get("room") || "", password: params.get("pw") || "", name: params.get("name") || "",
    relays: params.getAll("relay").join(" "), portal: params.get("portal") !== "off",
    ice: params.has("ice") ? params.getAll("ice").join(" ") : null };
}

function saved(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch { /* storage unavailable: the field is just not remembered */ }
}

/** "stun:a stun:b" → the URLs (space- or comma-separated). */
const urlList = (text) => text.split(/[\s,]+/).filter(Boolean);

// ------------------------------------------------------------------ small components
function Identicon({ fp, size = 28 }) {
  const ref = useRef(null);
  useEffect(() => {
    const canvas = ref.current;
    if (!canvas || !fp) return;
    const icon = core.identicon.identicon(fp);
    canvas.width = icon.size;
    canvas.height = icon.size;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, icon.size, icon.size);
    icon.cells.forEach((row, y) => row.forEach((level, x) => {
      if (level > 0) {
        g.fillStyle = icon.colours[level];
        g.fillRect(x, y, 1, 1);
      }
    }));
  }, [fp]);
  return html`<canvas ref=${ref} class=${`identicon identicon-${size}`} role="img" aria-label=${`identicon of ${fp}`}></canvas>`;
}

function Fingerprint({ fp }) {
  return html`<span class="fp"><${Identicon} fp=${fp} /><code>${fp}</code></span>`;
}

/** A <video> (and, for a remote peer, a muted <audio>) following a MediaStream. */
function StreamVideo({ stream, local, pair }) {
  const video = useRef(null);
  const audio = useRef(null);
  useEffect(() => {
    const v = video.current;
    if (v && v.srcObject !== stream) {
      v.srcObject = stream || null;
      if (stream) v.play().catch(() => {});
    }
    const a = audio.current;
    if (a && a.srcObject !== stream) {
      a.srcObject = stream || null;
      if (stream) a.play().catch(() => {});
    }
  }, [stream]);
  useEffect(() => {
    const v = video.current;
    if (!v || local || !pair || !v.requestVideoFrameCallback) return undefined;
    let handle = null;
    let live = true;
    const count = () => {
      if (!live) return;
      pair.videoFrames += 1;
      handle = v.requestVideoFrameCallback(count);
    };
    handle = v.requestVideoFrameCallback(count);
    return () => {
      live = false;
      if (handle !== null && v.cancelVideoFrameCallback) v.cancelVideoFrameCallback(handle);
    };
  }, [pair, local]);
  return html`
    <video ref=${video} class=${local ? "video local" : "video"} playsinline autoplay muted></video>
    ${local ? null : html`<audio ref=${audio} autoplay muted></audio>`}`;
}

function statusLabel(pair) {
  const labels = { discovered: "found", connecting: "connecting…", connected: "connected",
    reconnecting: "reconnecting…", failed: "failed", left: "left", gone: "gone" };
  return labels[pair.status] || pair.status;
}

// ------------------------------------------------------------------ screens
function Insecure() {
  const origin = location.origin;
  const port = location.port ? `:${location.port}` : "";
  return html`
    <section class="panel insecure" data-testid="insecure">
      <h1>sdparta cannot run on this address</h1>
      <p>This page was opened at <code>${origin}</code>, a plain <code>http://</code> address that is not
        this device. Browsers give the camera, the microphone and the cryptography sdparta needs
        (WebCrypto: room keys, signatures) only to secure pages — <code>https://</code>, or
        <code>http://localhost</code> / <code>http://127.0.0.1</code> on the same machine.</p>
      <h2>What to do</h2>
      <ul>
        <li>Whoever runs the portal starts it with HTTPS: <code>sdparta portal --tls self-signed</code>
          (it prints the certificate's SHA-256 fingerprint), then everyone opens
          <code>https://${location.hostname}${port}/web/</code> and, before accepting the browser's warning,
          compares the certificate's fingerprint with the printed one.</li>
        <li>Or the portal sits behind an HTTPS reverse proxy with a real certificate (see the README).</li>
        <li>On the portal's own machine, open <code>http://127.0.0.1${port}/web/</code> instead.</li>
      </ul>
    </section>`;
}

function JoinForm({ initial, me, onJoin, error }) {
  const [room, setRoom] = useState(initial.room);
  const [password, setPassword] = useState(initial.password);
  const [name, setName] = useState(initial.name);
  const [usePortal, setUsePortal] = useState(initial.portal);
  const [relays, setRelays] = useState(initial.relays);
  const [ice, setIce] = useState(initial.ice);
  const relayList = urlList(relays);
  const badRelay = relayList.find((url) => !/^wss?:\/\/[^\s/]+/.test(url));
  const iceList = urlList(ice);
  const badIce = iceList.find((url) => !STUN_URL.test(url));
  const usable = room.trim() && (usePortal || relayList.length) && !badRelay && !badIce;
  const submit = (event) => {
    event.preventDefault();
    if (usable) onJoin({ room: room.trim(), password, name: name.trim(), usePortal, relays: relayList, ice: iceList });
  };
  return html`
    <form class="panel join" onSubmit=${submit}>
      <h1>Join a room</h1>
      <label>Room<input name="room" value=${room} required autocomplete="off" autocapitalize="off"
        onInput=${(e) => setRoom(e.target.value)} /></label>
      <label>Password<input name="password" type="password" value=${password} autocomplete="off"
        onInput=${(e) => setPassword(e.target.value)} /></label>
      <label>Your name<input name="name" value=${name} maxlength="48" autocomplete="nickname"
        onInput=${(e) => setName(e.target.value)} /></label>
      <fieldset class="networks">
        <legend>Networks</legend>
        <label class="check"><input type="checkbox" name="portal" checked=${usePortal}
          onChange=${(e) => setUsePortal(e.target.checked)} /> this portal, <code>${location.origin}</code></label>
        <label>Nostr relays (optional, wss://…, space-separated)<input name="relays" value=${relays}
          autocomplete="off" autocapitalize="off" placeholder="wss://relay.example" onInput=${(e) => setRelays(e.target.value)} /></label>
        ${badRelay ? html`<p class="error">${badRelay} is not a ws:// or wss:// URL</p>` : null}
        <label>STUN server (finds your public address; empty: none)<input name="ice" value=${ice}
          autocomplete="off" autocapitalize="off" placeholder="none" data-testid="ice"
          onInput=${(e) => setIce(e.target.value)} /></label>
        ${badIce ? html`<p class="error">${badIce} is not a stun: or stuns: URL (host:port)</p>` : null}
      </fieldset>
      ${me ? html`<p class="me">You are <${Fingerprint} fp=${me.fingerprint} />
        ${me.persistent ? "" : html`<span class="warn"> (not stored: it changes on reload)</span>`}</p>` : null}
      ${error ? html`<p class="error" role="alert">${error}</p>` : null}
      <button type="submit" class="primary" data-testid="join" disabled=${!usable}>Join</button>
    </form>`;
}

function Joining({ step }) {
  return html`
    <section class="panel joining" data-testid="joining">
      <h1>Joining…</h1>
      <progress aria-label="joining"></progress>
      <p>${step}</p>
    </section>`;
}

function Tile({ pair, stream, local, name, level, muted }) {
  const speaking = level > SPEAKING_LEVEL && !muted;
  const classes = ["tile", speaking ? "speaking" : "", local ? "own" : "", pair ? `state-${pair.status}` : ""].join(" ");
  return html`
    <figure class=${classes} data-testid=${local ? "own-tile" : "tile"} data-session=${pair ? pair.sessionId : ""}>
      ${stream ? html`<${StreamVideo} stream=${stream} local=${local} pair=${pair} />`
        : html`<div class="novideo">${local ? "not sending video" : "no video"}</div>`}
      <figcaption>${name}${muted ? " · muted" : ""}${pair && pair.status !== "connected" ? ` · ${statusLabel(pair)}` : ""}</figcaption>
    </figure>`;
}

function Participants({ call }) {
  return html`
    <ul class="participants" aria-label="participants">
      <li class="peer self">
        <span class="dot state-connected"></span><span class="name">${call.name} (you)</span>
        <${Fingerprint} fp=${call.fingerprint} />
      </li>
      ${[...call.pairs.values()].map((pair) => html`
        <li class="peer" key=${pair.sessionId} data-testid="peer" data-state=${pair.status}
            data-session=${pair.sessionId} data-fingerprint=${pair.fingerprint} title=${pair.reason || ""}>
          <span class=${`dot state-${pair.status}`}></span>
          <span class="name">${pair.name}</span>
          <${Fingerprint} fp=${pair.fingerprint} />
          <span class="state">${statusLabel(pair)}</span>
          ${pair.reason && pair.finished ? html`<span class="reason">${pair.reason}</span>` : null}
        </li>`)}
    </ul>`;
}

function Chat({ call }) {
  const [text, setText] = useState("");
  const log = useRef(null);
  useEffect(() => {
    if (log.current) log.current.scrollTop = log.current.scrollHeight;
  }, [call.chat.length]);
  const send = (event) => {
    event.preventDefault();
    if (!text.trim()) return;
    call.sendChat(text);
    setText("");
  };
  return html`
    <section class="chat" aria-label="chat">
      <ol class="log" ref=${log} data-testid="chat-log">
        ${call.chat.map((line, i) => html`<li key=${i} class=${line.own ? "own" : ""}>
          <b>${line.own ? "you" : line.from}</b> ${line.text}</li>`)}
      </ol>
      <form class="say" onSubmit=${send}>
        <input aria-label="message" data-testid="chat-input" value=${text} maxlength="2000"
          placeholder="Message everyone" onInput=${(e) => setText(e.target.value)} />
        <button type="submit" data-testid="chat-send">Send</button>
      </form>
    </section>`;
}

function CallView({ call, media, hearing, room, onLeave }) {
  const [levels, setLevels] = useState({});
  useEffect(() => {
    const timer = setInterval(() => {
      const next = {};
      for (const pair of call.pairs.values()) {
        hearing.attach(pair.sessionId, pair.finished ? null : pair.stream);
        next[pair.sessionId] = hearing.level(pair.sessionId);
      }
      for (const sid of [...hearing.inputs.keys()]) if (!call.pairs.has(sid)) hearing.detach(sid);
      setLevels(next);
    }, 200);
    return () => clearInterval(timer);
  }, [call]);
  const pairs = [...call.pairs.values()];
  const toggleMute = () => {
    media.setMuted(!media.muted);
    call.broadcastState();
  };
  const toggleCamera = () => {
    media.setCameraOff(!media.cameraOff);
    call.broadcastState();
  };
  return html`
    <section class="call" data-testid="call">
      <header class="bar">
        <span class="room">${room}</span>
        <span class="count">${pairs.filter((p) => p.status === "connected").length} connected</span>
        ${media.problem ? html`<span class="warn" data-testid="media-problem">${media.problem}</span>` : null}
      </header>
      <div class="tiles">
        <${Tile} local stream=${media.stream} name=${`${call.name} (you)`} level=${0} muted=${media.muted || !media.audioTrack} />
        ${pairs.map((pair) => html`<${Tile} key=${pair.sessionId} pair=${pair} stream=${pair.stream} name=${pair.name}
          level=${levels[pair.sessionId] || 0} muted=${pair.remote.muted} />`)}
      </div>
      <aside class="side">
        <${Participants} call=${call} />
        <${Chat} call=${call} />
      </aside>
      <nav class="controls" aria-label="call controls">
        <button type="button" data-testid="mute" aria-pressed=${media.muted} disabled=${!media.audioTrack}
          onClick=${toggleMute}>${media.muted ? "Unmute" : "Mute"}</button>
        <button type="button" data-testid="camera" aria-pressed=${media.cameraOff} disabled=${!media.videoTrack}
          onClick=${toggleCamera}>${media.cameraOff ? "Camera on" : "Camera off"}</button>
        <button type="button" class="danger" data-testid="leave" onClick=${onLeave}>Leave</button>
      </nav>
    </section>`;
}

// ------------------------------------------------------------------ the app
const session = { call: null, media: null, hearing: null };
globalThis.sdparta = {
  report: () => (session.call ? session.call.report() : null),
  peak: (sid) => (session.hearing ? session.hearing.peak(sid) : null),
  level: (sid) => (session.hearing ? session.hearing.level(sid) : 0),
};

function App() {
  const [phase, setPhase] = useState(secure ? "form" : "insecure");
  const [step, setStep] = useState("");
  const [error, setError] = useState(null);
  const [me, setMe] = useState(null);
  const [room, setRoom] = useState("");
  const [, setTick] = useState(0);
  const initial = useRef({ ...fromFragment() });
  if (!initial.current.name) initial.current.name = saved(NAME_KEY) || "";
  if (initial.current.ice === null) initial.current.ice = saved(ICE_KEY) ?? PUBLIC_STUN;
  useEffect(() => {
    if (!secure) return;
    loadIdentity().then(({ identity, persistent }) => setMe({ identity, fingerprint: identity.fingerprint, persistent }))
      .catch((e) => setError(`no identity: ${e.message}`));
  }, []);
  useEffect(() => {
    const bye = () => { // the tab closes or navigates away: the byes go out now, unawaited
      if (session.call) session.call.farewell();
    };
    addEventListener("pagehide", bye);
    return () => removeEventListener("pagehide", bye);
  }, []);

  const join = async ({ room: roomName, password, name, usePortal, relays, ice }) => {
    // Inside the tap: the AudioContext and the camera/microphone prompt need this user gesture.
    const tappedAt = performance.now();
    const hearing = new Hearing();
    hearing.resume();
    const media = new LocalMedia();
    setError(null);
    setRoom(roomName);
    setPhase("joining");
    setStep("Asking for camera and microphone; deriving the room's keys (600 000 PBKDF2 rounds)…");
    const opened = media.open();
    try {
      const [keys, who] = await Promise.all([core.keys.RoomKeys.derive(roomName, password),
        me ? Promise.resolve(me) : loadIdentity().then(({ identity, persistent }) =>
          ({ identity, fingerprint: identity.fingerprint, persistent }))]);
      const keysAt = performance.now();
      setMe(who);
      await opened;
      setStep("Joining the room…");
      const displayName = core.wire.signedName(name || `web-${who.fingerprint.slice(0, 4)}`);
      if (name) save(NAME_KEY, name);
      save(ICE_KEY, ice.join(" "));
      const call = new Call({ portal: usePortal ? new Portal(location.origin) : null, relays, keys, identity: who.identity, name: displayName,
        media, onChange: () => setTick((t) => t + 1), iceServers: ice.map((url) => ({ urls: url })) });
      call.joinTapAt = tappedAt;
      call.keysAt = keysAt;
      session.call = call;
      session.media = media;
      session.hearing = hearing;
      await call.start();
      setPhase("call");
    } catch (e) {
      media.close();
      hearing.close();
      session.call = null;
      setError(`could not join: ${e.message}`);
      setPhase("form");
    }
  };

  const leave = async () => {
    const call = session.call;
    if (!call) return;
    setStep("Leaving (saying bye)…");
    try {
      await call.leave();
    } finally {
      session.media.close();
      session.hearing.close();
      setPhase("left");
    }
  };

  let body;
  if (phase === "insecure") body = html`<${Insecure} />`;
  else if (phase === "form") body = html`<${JoinForm} initial=${initial.current} me=${me} onJoin=${join} error=${error} />`;
  else if (phase === "joining") body = html`<${Joining} step=${step} />`;
  else if (phase === "call") body = html`<${CallView} call=${session.call} media=${session.media} hearing=${session.hearing}
    room=${room} onLeave=${leave} />`;
  else {
    body = html`<section class="panel left" data-testid="left"><h1>You left ${room}</h1>
      <button type="button" class="primary" onClick=${() => setPhase("form")}>Join again</button></section>`;
  }
  return html`${body}
    <footer class="foot"><span id="status">${secure ? `sdparta: protocol v${core.keys.PROTOCOL_VERSION} ready.`
      : "sdparta needs a secure context (https:// or http://127.0.0.1): this browser gives no WebCrypto here."}</span></footer>`;
}

const root = document.getElementById("app");
root.replaceChildren();
render(html`<${App} />`, root);
