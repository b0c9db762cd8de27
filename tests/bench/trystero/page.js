// Trystero 0.25.4 (Nostr strategy) join timing for sdparta's relay bench (tests/bench/relay_bench.py).
//
// Loaded as index.html?relay=ws://127.0.0.1:PORT/ ; Playwright calls window.benchJoin(appId, room, atMs)
// and reads window.bench. Times are performance.timeOrigin + performance.now() (ms since the epoch),
// so two pages, and sdparta's processes (time.time()), share one clock.
import {joinRoom, selfId} from 'trystero'

const now = () => performance.timeOrigin + performance.now()
const relay = new URLSearchParams(location.search).get('relay')

const bench = {
  selfId,
  relay,
  joinAt: null,
  peerJoins: [], // [{id, t}]
  errors: [],
  sockets: [], // every WebSocket URL this page opened: must be the local relay only
  iceServers: [] // every RTCPeerConnection's iceServers: must be empty
}
window.bench = bench

// Record (never change) what the page connects to, to prove that no public relay or STUN server is used.
const NativeWebSocket = window.WebSocket
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    bench.sockets.push(String(url))
    super(url, protocols)
  }
}
const NativePeerConnection = window.RTCPeerConnection
window.RTCPeerConnection = class extends NativePeerConnection {
  constructor(config, ...rest) {
    bench.iceServers.push(JSON.stringify(config?.iceServers ?? null))
    super(config, ...rest)
  }
}

window.addEventListener('error', e => bench.errors.push(String(e.message)))
window.addEventListener('unhandledrejection', e => bench.errors.push(String(e.reason)))

let room = null
const waiters = []

// Join `roomId` now (returns the join time) or at wall-clock time `atMs` (returns null at once, so
// that two pages can be told one after the other to join at the same instant; read bench.joinAt).
window.benchJoin = (appId, roomId, atMs) => {
  const go = () => {
    bench.joinAt = now()
    room = joinRoom({appId, relayConfig: {urls: [relay]}, rtcConfig: {iceServers: []}}, roomId)
    room.onPeerJoin = id => {
      bench.peerJoins.push({id, t: now()})
      waiters.splice(0).forEach(w => w())
    }
    return bench.joinAt
  }
  const wait = (atMs ?? 0) - now()
  if (wait <= 0) return go()
  setTimeout(go, wait)
  return null
}

// Resolves with the first onPeerJoin time, or null after `timeoutMs` (no polling).
window.benchWaitPeer = timeoutMs =>
  new Promise(resolve => {
    const done = () => resolve(bench.peerJoins.length ? bench.peerJoins[0].t : null)
    if (bench.peerJoins.length) return done()
    waiters.push(done)
    setTimeout(done, timeoutMs)
  })

window.benchLeave = async () => {
  if (room) await room.leave()
  room = null
}
