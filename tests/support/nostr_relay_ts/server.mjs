// A Nostr relay for sdparta's tests, a second implementation beside the PyPI nostr-relay:
// CodyTseng's @nostr-relay (TypeScript: core + SQLite event repository + zod validator) behind a
// `ws` server, with an HTTP server answering NIP-11. Everything is pinned in package-lock.json;
// tests/support/nostr_relay.py installs it (`npm ci`) and starts it.
//
//   node server.mjs --host 127.0.0.1 --port 7447 --db DIR/nostr.sqlite3
//                   [--max-message-length N] [--max-content-length N] [--max-subscriptions N]
//                   [--filter-cache-ms N]   (the library's REQ result cache, 1000 ms by default; 0: none)
//
// Logs one line per connection, refused message and lifecycle event to stdout.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { NostrRelay } from '@nostr-relay/core';
import { EventRepositorySqlite } from '@nostr-relay/event-repository-sqlite';
import { Validator } from '@nostr-relay/validator';
import { WebSocketServer } from 'ws';

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    db: { type: 'string' },
    'max-message-length': { type: 'string', default: String(128 * 1024) },
    'max-content-length': { type: 'string', default: String(96 * 1024) },
    'max-subscriptions': { type: 'string', default: '256' },
    'filter-cache-ms': { type: 'string', default: '1000' },
  },
});
if (!opt.port || !opt.db) {
  console.error('usage: node server.mjs --host H --port P --db FILE');
  process.exit(2);
}
const limits = {
  maxMessageLength: Number(opt['max-message-length']),
  maxContentLength: Number(opt['max-content-length']),
  maxSubscriptions: Number(opt['max-subscriptions']),
};
const version = createRequire(import.meta.url)('@nostr-relay/core/package.json').version;
const log = (...parts) => console.log(new Date().toISOString(), ...parts);

const repository = new EventRepositorySqlite(opt.db);
await repository.init();
const relay = new NostrRelay(repository, {
  maxSubscriptionsPerClient: limits.maxSubscriptions,
  filterResultCacheTtl: Number(opt['filter-cache-ms']),
  logger: { setLogLevel() {}, debug() {}, info: (...a) => log('info', ...a), warn: (...a) => log('warn', ...a),
            error: (...a) => log('error', ...a) },
});
const validator = new Validator({ maxContentLength: limits.maxContentLength });

const nip11 = JSON.stringify({
  name: 'sdparta test relay (ts)',
  description: "started by sdparta's tests: @nostr-relay/core with the SQLite event repository",
  software: 'https://github.com/CodyTseng/nostr-relay',
  version,
  supported_nips: [1, 9, 11, 40],
  limitation: {
    max_message_length: limits.maxMessageLength,
    max_content_length: limits.maxContentLength,
    max_subscriptions: limits.maxSubscriptions,
    max_subid_length: 128,
    max_limit: 1000,
    auth_required: false,
    payment_required: false,
  },
});

const http = createServer((req, res) => {
  if ((req.headers.accept ?? '').includes('application/nostr+json')) {
    res.writeHead(200, { 'Content-Type': 'application/nostr+json', 'Access-Control-Allow-Origin': '*' });
    res.end(nip11);
  } else {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('a nostr relay (sdparta tests)\n');
  }
});
// a message over max_message_length closes the socket with 1009 (ws's maxPayload), as most relays do
const wss = new WebSocketServer({ server: http, maxPayload: limits.maxMessageLength });

wss.on('connection', (ws, req) => {
  const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  log('connect', peer);
  relay.handleConnection(ws, req.socket.remoteAddress);
  ws.on('message', async (data) => {
    let message;
    try {
      message = await validator.validateIncomingMessage(data);
    } catch (error) {
      // a refused EVENT gets its OK false (when it has an id at all), anything else a NOTICE
      let id = null;
      try {
        const raw = JSON.parse(data.toString());
        if (Array.isArray(raw) && raw[0] === 'EVENT' && typeof raw[1]?.id === 'string') id = raw[1].id;
      } catch { /* not JSON */ }
      const reason = `invalid: ${error.message}`;
      log('refused', peer, reason.slice(0, 300));
      ws.send(JSON.stringify(id === null ? ['NOTICE', reason] : ['OK', id, false, reason]));
      return;
    }
    try {
      await relay.handleMessage(ws, message);
    } catch (error) {
      log('error', peer, error?.stack ?? error);
      ws.send(JSON.stringify(['NOTICE', `error: ${error?.message ?? error}`]));
    }
  });
  ws.on('close', () => {
    relay.handleDisconnect(ws);
    log('disconnect', peer);
  });
  ws.on('error', (error) => log('ws error', peer, error.message));
});

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log('stopping on', signal);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  http.close();
  await relay.destroy();
  await repository.destroy(); // closes SQLite: the WAL is checkpointed into the database file
  log('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

http.listen(Number(opt.port), opt.host, () => {
  log(`listening on ${opt.host}:${opt.port}, @nostr-relay/core ${version}, database ${opt.db}`);
});
