"""The browser page's protocol core (tui/sdparta/web/js/) in real headless Chromium.

One Chromium (Debian's, through playwright's ``executable_path``) and one real ``sdparta portal`` run
in a network namespace with only ``lo`` (tests/support/browser.py): the page is the portal's own
``/web/`` at http://127.0.0.1 (a secure context, so WebCrypto works), under the portal's CSP. The
modules reproduce every vector of docs/protocol.md §7 and §8 and the skynet-js vectors the Python
store is checked against, open and verify what the Python code seals and signs in the same run, and
produce what the Python code opens and verifies; tampered input is rejected with a WireError /
InvalidEvent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sdparta.nostr import NostrKey, verify_event
from sdparta.portal import app_build
from sdparta.portal.webapp import load_web_dir
from sdparta.room import wire
from sdparta.room.keys import Identity, RoomKeys, fingerprint
from sdparta.room.nostr_wire import RoomTags, b64, decode_presence_record, encode_presence_record, unb64
from sdparta.store.crypto import (
    KeyPair,
    hash_data_key,
    hash_registry_entry,
    sign_entry,
    skylink_for_content,
)
from sdparta.ui.identicon import identicon_colours, identicon_grid
from support.browser import BASE_ARGS, IsolatedNamespace, browser_unavailable
from support.procs import PortalProcess, start_portal

pytestmark = pytest.mark.skipif(browser_unavailable() is not None, reason=browser_unavailable() or "")

SID_A, SID_B = "0011223344556677", "8899aabbccddeeff"
SEED = bytes(range(32))
WEB = Path(__file__).resolve().parents[1] / "tui" / "sdparta" / "web"

# docs/protocol.md §7
KEY_VECTORS = {
    "sealKey": "35ffb15e5eea97a15c2e5535068c45ec627cd08c6c49e19c2d08a27bb87fb72e",
    "tagKey": "af592b55778218639e384261b5eabc8ec34578ba4e55a4e8ecef645ab58d90a2",
    "presenceSeed": "24fff6ed1e3fdca2939bd0cbeb1e5ed700d688e03fb031182660a097db30bf5e",
    "roomId": "89c001dec17a999c5a84f0a6b1d74eb6",
}
DATA_KEY_VECTORS = [
    (["presence"], "2fe912703f6c80583c6216ebd3064ab05fdce1bd13bcd0fd54da0b5753759297"),
    (["pair", SID_A, SID_B], "c3827605ca3914c3fe20f709ff92843ff1e6663d2e08b5df3342dc91f9194576"),
    (["settings"], "ace2d5608031cee8a9798750e350308dbd9f67256dfc4bdd2a2aeab9a8eb2464"),
    # §8
    (["nostr", "room"], "bd1da440e40ec365a41f36c9aed03ac2711fcd64a7beb1c693745bca89632ad2"),
    (["nostr", "settings"], "4073c9b6cf9480c701edbc93ba2cee25b3ea84a43ed98d1a62f9e9f722791adc"),
    (["nostr", "to", SID_B], "33c45b3d5df9544871fe99a4634d8c48cdfcf9370fa6500aba6fe6f5ff62c52c"),
    (["nostr", "presence", SID_A], "a136979229c063fbf12e581f997f514146b444c3334a97f0118a322a5e6be2f3"),
]
IDENTITY_PUBLIC = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
IDENTITY_FINGERPRINT = "5647:5aa7:5463:474c"
BYE = {"v": 1, "type": "bye", "from": SID_A, "to": SID_B, "name": "alice", "ts": 1700000000000, "gen": 0}
BYE_PREFIX = "53445031" + "00" * 12 + "748ab6a982d6d6815e08"
NOSTR_SECRET = bytes(range(1, 33))
NOSTR_PUBLIC = "84bf7562262bbd6940085748f3be6afa52ae317155181ece31b66351ccffa4b0"
NOSTR_PRESENCE_PREFIX = "53445031" + "00" * 12 + "5e564514"
NOSTR_EVENT_ID = "af76deaa7e1aba720fc601ecbdc7d6faae0deba38fbf86f471798e76c6c5fdf4"
# skynet-js 4.3.0 (tests/test_skynet_vectors.py)
SKYNET_PUBLIC = "a93b9e0c34b3792d8699648181629ae6ddc7dbf44face662ab880582ef860321"
SKYNET_DATA_KEY = "24c250780929bff01830ab2b43774a56f1f7c5697f10c815caa451756967f049"
SKYNET_ENTRY_HASH = "23f55ee56b7d4fe421eb2acb55e2008f2e61062322540bde7045637d2dd5f77e"
SKYNET_SIGNATURE = ("f6bdc798eb59dad00e62a7db72f9a46bb075a5cfb9d94ecf73b56f5818bed679"
                    "ee839546ca5a3bd8f3c5fd6089996b441157a09ebb0e61389ccb561c11f6760d")
TURN = [wire.TurnServer("turn:203.0.113.1:3478?transport=udp", "sdparta", "secret")]

PRELUDE = """async () => {
  const core = await import("sdparta/core.js");
  const { bytes, keys } = core;
  const roomKeys = new Map();
  window.T = {
    core, hx: bytes.toHex, ux: bytes.fromHex,
    room: async (room = "demo-room", password = "hunter2") => {
      const id = room + "\\0" + password;
      if (!roomKeys.has(id)) roomKeys.set(id, keys.RoomKeys.derive(room, password));
      return roomKeys.get(id);
    },
    alice: () => keys.Identity.fromSeed(bytes.fromHex("SEED_HEX")),
    // the error a call throws, as "Name: message" (null when it does not throw)
    error: async (f) => { try { await f(); return null; } catch (e) { return `${e.name}: ${e.message}`; } },
  };
}""".replace("SEED_HEX", SEED.hex())


@dataclass
class Web:
    page: Any
    portal: PortalProcess
    errors: list[str] = field(default_factory=list)
    load_errors: list[str] = field(default_factory=list)  # what loading the page reported

    def run(self, script: str, arg: Any = None) -> Any:
        """``script`` is the body of an async function of ``a`` (the argument) with T in scope."""
        return self.page.evaluate(f"async (a) => {{ const T = window.T; const C = T.core; {script} }}", arg)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    from playwright.sync_api import sync_playwright

    workdir = tmp_path_factory.mktemp("web-core")
    with IsolatedNamespace(workdir) as ns, sync_playwright() as pw:
        portal = start_portal(workdir / "portal.sqlite3", argv_prefix=ns.prefix())
        browser = None
        try:
            browser = pw.chromium.launch(executable_path=str(ns.wrapper), args=list(BASE_ARGS))
            page = browser.new_page()
            web = Web(page, portal)
            page.on("pageerror", lambda exc: web.errors.append(f"page error: {exc}"))
            # a missing resource is reported by the response handler, with its URL
            page.on("console", lambda msg: web.errors.append(f"console {msg.type}: {msg.text}")
                    if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
            page.on("response", lambda r: web.errors.append(f"HTTP {r.status}: {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            page.goto(portal.url + "/web/")
            page.wait_for_selector("html[data-core]", state="attached")  # no eval: the CSP forbids it
            page.evaluate(PRELUDE)
            web.load_errors = list(web.errors)
            yield web
        finally:
            if browser is not None:
                browser.close()
            portal.stop()


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return RoomKeys.derive("demo-room", "hunter2")


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.from_seed(SEED)


def test_page_loads_under_the_portals_csp_without_errors(web: Web) -> None:
    assert web.page.evaluate("document.documentElement.dataset.core") == "ready"
    assert web.page.evaluate("document.getElementById('status').textContent") == "sdparta: protocol v1 ready."
    assert web.page.evaluate("window.isSecureContext")
    assert web.load_errors == []


def test_room_key_vectors(web: Web, keys: RoomKeys) -> None:
    got = web.run("""const K = await T.room();
        const out = {sealKey: T.hx(K.sealKey), tagKey: T.hx(K.tagKey), presenceSeed: T.hx(K.presenceSeed),
                     roomId: T.hx(K.roomId), dataKeys: []};
        for (const parts of a) out.dataKeys.push(T.hx(await K.dataKey(...parts)));
        return out;""", [parts for parts, _ in DATA_KEY_VECTORS])
    assert {k: got[k] for k in KEY_VECTORS} == KEY_VECTORS
    assert got["dataKeys"] == [expected for _, expected in DATA_KEY_VECTORS]
    assert got["sealKey"] == keys.seal_key.hex() and got["roomId"] == keys.room_id.hex()
    epochs = [[slot, f"epoch-{e}"] for slot in ("presence", "settings") for e in (1, 2, 32)]
    assert web.run("""const K = await T.room(); const out = [];
        for (const parts of a) out.push(T.hx(await K.dataKey(...parts)));
        return out;""", epochs) == [keys.data_key(*parts).hex() for parts in epochs]


def test_other_rooms_and_unicode_names_derive_as_python(web: Web) -> None:
    """NFC normalisation and the NUL separator: a decomposed "é" is the same room; fewer rounds to stay fast."""
    cases = [("café", "pässword"), ("cafe\u0301", "pa\u0308ssword"), ("demo-room", ""), ("a", "b\u0000c")]
    got = web.run("""const out = [];
        for (const [room, pw] of a) out.push(T.hx((await C.keys.RoomKeys.derive(room, pw, 1000)).sealKey));
        return out;""", cases)
    assert got == [RoomKeys.derive(room, pw, iterations=1000).seal_key.hex() for room, pw in cases]
    assert got[0] == got[1]
    assert web.run("return T.error(() => C.keys.RoomKeys.derive('  ', 'x', 1000))") == (
        "Error: the room name must not be empty")


def test_identity_and_fingerprint_vector(web: Web) -> None:
    got = web.run("const me = await T.alice(); return [T.hx(me.publicKey), me.fingerprint];")
    assert got == [IDENTITY_PUBLIC, IDENTITY_FINGERPRINT]
    fresh = web.run("const me = await C.keys.Identity.generate(); return [T.hx(me.seed), T.hx(me.publicKey)];")
    assert Identity.from_seed(bytes.fromhex(fresh[0])).public_key.hex() == fresh[1]
    assert web.run("return C.keys.newSessionId()") != web.run("return C.keys.newSessionId()")


def test_bye_message_vector_and_python_opens_it(web: Web, keys: RoomKeys, alice: Identity) -> None:
    data_key = keys.data_key("pair", SID_A, SID_B)
    blob = web.run("""const K = await T.room(); const me = await T.alice();
        const dk = await K.dataKey("pair", a.from, a.to);
        return T.hx(await C.wire.encodeMessage(K, me, dk, a, new Uint8Array(12)));""", BYE)
    assert blob.startswith(BYE_PREFIX)
    assert bytes.fromhex(blob) == wire.encode_message(keys, alice, data_key, BYE, nonce=bytes(12))
    assert wire.decode_message(keys, alice.public_key, data_key, bytes.fromhex(blob)) == BYE


def test_nostr_vectors(web: Web, keys: RoomKeys, alice: Identity) -> None:
    got = web.run("""const K = await T.room(); const me = await T.alice();
        const nk = new C.nostr.NostrKey(T.ux(a.secret));
        const blob = await C.nostrWire.encodePresenceRecord(K, me, a.sid, T.ux(nk.pubkey), "alice", 1700000000000,
                                                            {nonce: new Uint8Array(12)});
        const event = await C.nostrWire.presenceEvent(K, nk, a.sid, blob, 1700000000);
        C.nostr.verifyEvent(JSON.parse(JSON.stringify(event)));
        return {pubkey: nk.pubkey, blob: T.hx(blob), event};""", {"secret": NOSTR_SECRET.hex(), "sid": SID_A})
    assert got["pubkey"] == NOSTR_PUBLIC
    assert got["blob"].startswith(NOSTR_PRESENCE_PREFIX)
    python_blob = encode_presence_record(keys, alice, SID_A, bytes.fromhex(NOSTR_PUBLIC), "alice", 1700000000000,
                                         nonce=bytes(12))
    assert got["blob"] == python_blob.hex()
    event = got["event"]
    assert event["id"] == NOSTR_EVENT_ID and event["kind"] == 30078 and event["created_at"] == 1700000000
    assert event["tags"] == [["d", DATA_KEY_VECTORS[6][1]], ["x", DATA_KEY_VECTORS[3][1]]]
    assert verify_event(event).id == NOSTR_EVENT_ID  # Python verifies the browser's BIP-340 signature
    record = decode_presence_record(keys, bytes.fromhex(event["pubkey"]), RoomTags(keys).presence_d(SID_A),
                                    unb64(event["content"], 4096))
    assert record.member is not None and record.member.name == "alice" and record.ts_ms == 1700000000000


def test_skynet_js_vectors(web: Web) -> None:
    got = web.run("""const kp = await C.skynet.keyPairFromSeed("test-room");
        const dk = C.skynet.hashDataKey("peers");
        const entry = await C.skynet.signEntry(kp, dk, Uint8Array.of(1, 2, 3), 5);
        const published = {publicKey: T.ux(a.pk), dataKey: T.ux(a.dk), data: Uint8Array.of(1, 2, 3), revision: 5n,
                           signature: T.ux(a.sig)};
        const hash = C.skynet.hashRegistryEntry(dk, Uint8Array.of(1, 2, 3), 5);
        return {pk: T.hx(kp.publicKey), dk: T.hx(dk), hash: T.hx(hash),
                sig: T.hx(entry.signature), verifies: await C.skynet.verifyEntry(entry),
                published: await C.skynet.verifyEntry(published),
                otherRevision: await C.skynet.verifyEntry({...published, revision: 6n})};""",
                  {"pk": SKYNET_PUBLIC, "dk": SKYNET_DATA_KEY, "sig": SKYNET_SIGNATURE})
    assert got == {"pk": SKYNET_PUBLIC, "dk": SKYNET_DATA_KEY, "hash": SKYNET_ENTRY_HASH, "sig": SKYNET_SIGNATURE,
                   "verifies": True, "published": True, "otherRevision": False}


def test_registry_entries_and_skylinks_agree_with_python(web: Web) -> None:
    keypair = KeyPair.from_seed("interop")
    data_key = hash_data_key("k")
    entries = [sign_entry(keypair, data_key, data, revision) for data, revision in
               ((b"", 0), (b"\x01" * 34, 7), (bytes(range(113)), 2**64 - 1), (b"x", 2**53 + 1))]
    answers = [json.dumps({"data": e.data.hex(), "revision": e.revision, "signature": e.signature.hex()})
               for e in entries]
    answers.append(json.dumps({"data": list(entries[1].data), "revision": str(entries[1].revision),
                               "signature": b64(entries[1].signature)}))  # skynet-js arrays, skyd strings
    got = web.run("""const out = [];
        for (const answer of a.answers) {
          const entry = await C.skynet.parseEntry(T.ux(a.pk), T.ux(a.dk), answer);
          out.push([T.hx(entry.data), entry.revision.toString()]);
        }
        const bad = [];
        for (const answer of a.bad) bad.push(await T.error(() => C.skynet.parseEntry(T.ux(a.pk), T.ux(a.dk), answer)));
        const link = C.skynet.skylinkForContent(new TextEncoder().encode("hello"));
        const raw = C.skynet.decodeSkylink(link);
        const badLinks = [];
        for (const l of [link.slice(0, -1) + {A: "B", Q: "R", g: "h", w: "x"}[link.at(-1)], "short", "!".repeat(46),
                         link + "A", "", "A".repeat(45) + "="]) {
          badLinks.push(await T.error(() => C.skynet.decodeSkylink(l)));
        }
        return {out, bad, link, raw: T.hx(raw), again: C.skynet.encodeSkylink(raw), badLinks};""", {
        "pk": keypair.public_key.hex(), "dk": data_key.hex(), "answers": answers,
        "bad": [answers[1].replace('"revision": 7', '"revision": 8'),
                answers[1].replace('"revision": 7', '"revision": 7.0'),
                json.dumps({"data": "", "revision": 2**64, "signature": entries[0].signature.hex()}),
                '{"data": "", "revision": 0}', "[" * 3000, "x" * 5000]})
    assert got["out"] == [[e.data.hex(), str(e.revision)] for e in entries] + [[entries[1].data.hex(), "7"]]
    assert got["bad"][0].startswith("WireError: registry entry signature does not verify")
    assert got["bad"][1] == got["bad"][2] == "WireError: registry answer has no valid uint64 revision"
    assert got["bad"][3] == "WireError: registry answer has no 64-byte signature"
    assert got["bad"][4] == "WireError: registry answer nests deeper than 8 levels"
    assert got["bad"][5] == "WireError: registry answer too large"
    assert got["link"] == skylink_for_content(b"hello") and got["again"] == got["link"]
    assert got["raw"].startswith("0000")
    assert all(e is not None and e.startswith("WireError: ") for e in got["badLinks"])
    assert web.run("return T.hx(C.skynet.hashRegistryEntry(T.ux(a), new Uint8Array(0), 18446744073709551615n))",
                   data_key.hex()) == hash_registry_entry(data_key, b"", 2**64 - 1).hex()


def test_the_real_portal_takes_the_browsers_registry_entries_and_skyfiles(web: Web, keys: RoomKeys) -> None:
    """Through the page's own origin (CSP connect-src 'self'): the portal — which verifies with
    store/crypto.py — accepts the browser's signed entry, refuses a revision that does not grow, and
    stores a sealed presence list under the skylink the browser computes; what comes back verifies."""
    got = web.run("""const K = await T.room(); const me = await T.alice();
        const slot = await C.keys.Identity.fromSeed(K.presenceSeed), dk = await K.dataKey("presence");
        const member = await C.wire.signMember(K, me, "0011223344556677", "alice", Date.now());
        const blob = await C.wire.encodePresence(K, slot.publicKey, dk, [member]);
        const form = new FormData(); form.append("file", new Blob([blob]), "presence");
        const upload = await (await fetch("/skynet/skyfile", {method: "POST", body: form})).json();
        const raw = C.skynet.decodeSkylink(upload.skylink);
        const post = async (revision) => {
          const e = await C.skynet.signEntry(slot, dk, raw, revision);
          const body = JSON.stringify({publickey: {algorithm: "ed25519", key: [...e.publicKey]}, datakey: T.hx(dk),
            revision: Number(e.revision), data: [...e.data], signature: [...e.signature]});
          const headers = {"Content-Type": "application/json"};
          return (await fetch("/skynet/registry", {method: "POST", headers, body})).status;
        };
        const first = await post(1), again = await post(1);
        const query = `publickey=ed25519:${T.hx(slot.publicKey)}&datakey=${T.hx(dk)}`;
        const answer = await (await fetch("/skynet/registry?" + query)).text();
        const entry = await C.skynet.parseEntry(slot.publicKey, dk, answer);
        const link = C.skynet.encodeSkylink(entry.data);
        const stored = new Uint8Array(await (await fetch("/" + link)).arrayBuffer());
        const list = await C.wire.decodePresence(K, slot.publicKey, dk, stored);
        return {first, again, revision: entry.revision.toString(), link, expected: C.skynet.skylinkForContent(blob),
                matches: C.skynet.contentMatches(link, stored), names: list.members.map((m) => m.name),
                presenceSlot: T.hx(slot.publicKey)};""")
    assert got["first"] in (200, 204) and got["again"] >= 400
    assert got["revision"] == "1" and got["link"] == got["expected"] and got["matches"]
    assert got["names"] == ["alice"]
    assert got["presenceSlot"] == KeyPair.from_private_bytes(keys.presence_seed).public_key.hex()


def test_python_seals_and_signs_the_browser_opens_and_verifies(web: Web, keys: RoomKeys, alice: Identity) -> None:
    bob = Identity.generate()
    pair_key = keys.data_key("pair", SID_B, SID_A)
    offer = {"v": 1, "type": "offer", "from": SID_B, "to": SID_A, "name": "Bøb ☃", "ts": 1700000000123, "gen": 3,
             "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n\u00e9\U0001f600"}
    presence_slot, presence_key = bytes(range(32, 64)), keys.data_key("presence")
    good = [wire.sign_member(keys, alice, SID_A, "alice", 1700000000000),
            wire.sign_member(keys, bob, SID_B, "Zoë\u200b 😀", 1700000000001)]
    forged = wire.Member(alice.public_key, SID_B, "alice", 1700000000000, good[0].signature)
    settings_slot, settings_key = bytes(32), keys.data_key("settings")
    nostr_key = NostrKey()
    nk = bytes.fromhex(nostr_key.pubkey)
    tags = RoomTags(keys)
    leaving = encode_presence_record(keys, bob, SID_B, nk, "bob", 1700000000999, leaving=True)
    event = nostr_key.addressable(tags.presence_d(SID_B), b64(leaving), [("x", tags.room)])
    message_event = nostr_key.addressable(pair_key.hex(), b64(wire.encode_message(keys, bob, pair_key, offer)),
                                          [("x", tags.to(SID_A))])
    nostr_settings_key = keys.data_key("nostr", "settings")
    settings_event = nostr_key.addressable(tags.settings, b64(wire.encode_settings(
        keys, bob, nk, nostr_settings_key, TURN, 1700000000555)), [("x", tags.settings)])
    got = web.run("""const K = await T.room(); const W = C.wire, N = C.nostrWire;
        const member = (m) => ({pk: T.hx(m.publicKey), sid: m.sessionId, name: m.name, ts: m.tsMs});
        const message = await W.decodeMessage(K, T.ux(a.bob), T.ux(a.pairKey), T.ux(a.message));
        const presence = await W.decodePresence(K, T.ux(a.presenceSlot), T.ux(a.presenceKey), T.ux(a.presence));
        const settings = await W.decodeSettings(K, T.ux(a.settingsSlot), T.ux(a.settingsKey), T.ux(a.settings));
        const event = C.nostr.parseEvent(a.event);
        const record = await N.decodePresenceRecord(K, T.ux(event.pubkey), C.nostr.tagValue(event, "d"),
                                                    N.unb64(event.content, N.MAX_PRESENCE_RECORD_BYTES));
        const mev = C.nostr.parseEvent(a.messageEvent);
        const viaNostr = await W.decodeMessage(K, T.ux(a.bob), T.ux(C.nostr.tagValue(mev, "d")),
                                               N.unb64(mev.content, W.MAX_MESSAGE_BYTES));
        const sev = C.nostr.parseEvent(a.settingsEvent);
        const nostrSettings = await W.decodeSettings(K, T.ux(sev.pubkey), await new N.RoomTags(K).settingsKey(),
                                                     N.unb64(sev.content, W.MAX_SETTINGS_BYTES));
        return {message, viaNostr, members: presence.members.map(member), rejected: presence.rejected,
                settings: {author: T.hx(settings.author), ts: settings.tsMs, turn: settings.turn},
                nostrSettings: nostrSettings.turn, record: {pk: T.hx(record.publicKey), sid: record.sessionId,
                ts: record.tsMs, member: record.member}, eventTags: mev.tags};""", {
        "bob": bob.public_key.hex(), "pairKey": pair_key.hex(),
        "message": wire.encode_message(keys, bob, pair_key, offer).hex(),
        "presenceSlot": presence_slot.hex(), "presenceKey": presence_key.hex(),
        "presence": wire.encode_presence(keys, presence_slot, presence_key, [good[0], forged, good[1]]).hex(),
        "settingsSlot": settings_slot.hex(), "settingsKey": settings_key.hex(),
        "settings": wire.encode_settings(keys, alice, settings_slot, settings_key, TURN, 1700000000777).hex(),
        "event": event.to_json(), "messageEvent": message_event.to_json(), "settingsEvent": settings_event.to_json()})
    assert got["message"] == offer and got["viaNostr"] == offer
    assert got["members"] == [{"pk": m.public_key.hex(), "sid": m.session_id, "name": m.name, "ts": m.ts_ms}
                              for m in good]
    assert got["rejected"] == 1
    assert got["settings"] == {"author": alice.public_key.hex(), "ts": 1700000000777, "turn": [
        {"url": t.url, "username": t.username, "credential": t.credential} for t in TURN]}
    assert got["nostrSettings"] == got["settings"]["turn"]
    assert got["record"] == {"pk": bob.public_key.hex(), "sid": SID_B, "ts": 1700000000999, "member": None}
    assert got["eventTags"] == [["d", pair_key.hex()], ["x", tags.to(SID_A)]]


def test_the_browser_seals_and_signs_python_opens_and_verifies(web: Web, keys: RoomKeys, alice: Identity) -> None:
    got = web.run("""const K = await T.room(); const W = C.wire, N = C.nostrWire;
        const me = await T.alice(); const bob = await C.keys.Identity.generate();
        const pairKey = await K.dataKey("pair", a.offer.from, a.offer.to);
        const message = await W.encodeMessage(K, me, pairKey, a.offer);
        const slot = T.ux(a.slot), presenceKey = await K.dataKey("presence");
        const members = [await W.signMember(K, me, a.offer.from, "  alice\\n\\u0007 ", 1700000000000),
                         await W.signMember(K, bob, a.offer.to, "Zoë 😀", 1700000000001)];
        const presence = await W.encodePresence(K, slot, presenceKey, members);
        const settingsKey = await K.dataKey("settings");
        const settings = await W.encodeSettings(K, me, slot, settingsKey, a.turn, 1700000000777);
        const nk = new C.nostr.NostrKey();
        const record = await N.encodePresenceRecord(K, bob, a.offer.to, T.ux(nk.pubkey), "bob", 1700000000002);
        const presenceEvent = await N.presenceEvent(K, nk, a.offer.to, record);
        const messageEvent = await N.messageEvent(K, nk, a.offer.from, a.offer.to, message);
        const nostrSettings = await W.encodeSettings(K, bob, T.ux(nk.pubkey), await new N.RoomTags(K).settingsKey(),
                                                     a.turn, 1700000000888);
        const settingsEvent = await N.settingsEvent(K, nk, nostrSettings);
        return {message: T.hx(message), presence: T.hx(presence), settings: T.hx(settings), bob: T.hx(bob.publicKey),
                names: members.map((m) => m.name), events: [presenceEvent, messageEvent, settingsEvent]};""",
        {"offer": {"v": 1, "type": "offer", "from": SID_A, "to": SID_B, "name": "alice", "ts": 1700000000100,
                   "gen": 2, "sdp": "v=0\r\n\u00e9\U0001f600\"\\\u0001\u007f\u2028"},
         "slot": "ab" * 32, "turn": [{"url": t.url, "username": t.username, "credential": t.credential} for t in TURN]})
    offer = {"v": 1, "type": "offer", "from": SID_A, "to": SID_B, "name": "alice", "ts": 1700000000100, "gen": 2,
             "sdp": "v=0\r\n\u00e9\U0001f600\"\\\u0001\u007f\u2028"}
    pair_key = keys.data_key("pair", SID_A, SID_B)
    assert wire.decode_message(keys, alice.public_key, pair_key, bytes.fromhex(got["message"])) == offer
    # the browser signs the same canonical JSON bytes as Python (ensure_ascii escapes included)
    plain = wire.open_sealed(keys, b"msg", alice.public_key, pair_key, bytes.fromhex(got["message"]), 1 << 16)
    assert plain[64:] == json.dumps(offer, separators=(",", ":"), sort_keys=True).encode()
    slot = bytes.fromhex("ab" * 32)
    members, rejected = wire.decode_presence(keys, slot, keys.data_key("presence"), bytes.fromhex(got["presence"]))
    assert rejected == 0 and [m.name for m in members] == got["names"] == ["alice", "Zoë 😀"]
    assert [m.public_key.hex() for m in members] == [alice.public_key.hex(), got["bob"]]
    settings = wire.decode_settings(keys, slot, keys.data_key("settings"), bytes.fromhex(got["settings"]))
    assert settings.turn == tuple(TURN) and settings.author == alice.public_key and settings.ts_ms == 1700000000777
    tags = RoomTags(keys)
    presence_event, message_event, settings_event = (verify_event(e) for e in got["events"])
    assert presence_event.tag("d") == tags.presence_d(SID_B) and presence_event.tag("x") == tags.room
    record = decode_presence_record(keys, bytes.fromhex(presence_event.pubkey), presence_event.tag("d") or "",
                                    unb64(presence_event.content, 4096))
    assert record.member is not None and record.member.name == "bob"
    assert record.key == (bytes.fromhex(got["bob"]), SID_B)
    assert message_event.tag("d") == pair_key.hex() and message_event.tag("x") == tags.to(SID_B)
    assert wire.decode_message(keys, alice.public_key, pair_key, unb64(message_event.content, 1 << 16)) == offer
    assert settings_event.tag("d") == settings_event.tag("x") == tags.settings
    nostr_settings = wire.decode_settings(keys, bytes.fromhex(settings_event.pubkey),
                                          keys.data_key("nostr", "settings"), unb64(settings_event.content, 8192))
    assert nostr_settings.turn == tuple(TURN) and nostr_settings.author.hex() == got["bob"]


def test_tampered_or_misplaced_records_are_rejected(web: Web, keys: RoomKeys, alice: Identity) -> None:
    pair_key = keys.data_key("pair", SID_A, SID_B)
    body = {"v": 1, "type": "answer", "from": SID_A, "to": SID_B, "sdp": "v=0"}
    blob = wire.encode_message(keys, alice, pair_key, body)
    mallory = Identity.generate()
    raw = json.dumps(BYE, separators=(",", ":"), sort_keys=True).encode()

    def signed(author: Identity, text: bytes, key: bytes = pair_key) -> str:
        """``text`` signed by ``author``, sealed in alice's pair slot (where the browser looks)."""
        signature = author.sign(b"sdparta/v1/msg\x00" + keys.room_id + key + text)
        return wire.seal(keys, b"msg", alice.public_key, key, signature + text).hex()

    got = web.run("""const K = await T.room(); const me = await T.alice(); const W = C.wire;
        const dk = T.ux(a.pairKey), blob = T.ux(a.blob);
        const flips = [];
        for (let i = 0; i < blob.length; i++) {
          const bad = Uint8Array.from(blob); bad[i] ^= 1 + (i % 255);
          flips.push(await T.error(() => W.decodeMessage(K, me.publicKey, dk, bad)));
        }
        const errors = {};
        for (const [name, hex] of Object.entries(a.signed))
          errors[name] = await T.error(() => W.decodeMessage(K, me.publicKey, dk, T.ux(hex)));
        const other = await C.keys.RoomKeys.derive("demo-room", "guess", 1000);
        errors.wrongPassword = await T.error(() => W.decodeMessage(other, me.publicKey, dk, blob));
        const reverse = await K.dataKey("pair", "8899aabbccddeeff", "0011223344556677");
        errors.otherSlot = await T.error(() => W.decodeMessage(K, me.publicKey, reverse, blob));
        errors.otherAuthor = await T.error(() => W.decodeMessage(K, T.ux(a.mallory), dk, blob));
        const huge = new Uint8Array(W.MAX_MESSAGE_BYTES + 1);
        errors.huge = await T.error(() => W.decodeMessage(K, me.publicKey, dk, huge));
        errors.notOurs = await T.error(() => W.decodeMessage(K, me.publicKey, dk, new Uint8Array(40)));
        errors.deepPresence = await T.error(() => W.decodePresence(K, T.ux(a.slot), dk, T.ux(a.deep)));
        errors.presenceAsSettings = await T.error(() => W.decodeSettings(K, T.ux(a.slot), dk, T.ux(a.presence)));
        for (const [name, hex] of Object.entries(a.settings))
          errors[name] = await T.error(() => W.decodeSettings(K, T.ux(a.slot), dk, T.ux(hex)));
        return {flips, errors};""", {
        "pairKey": pair_key.hex(), "blob": blob.hex(), "mallory": mallory.public_key.hex(), "slot": "00" * 32,
        "signed": {
            "forged": signed(mallory, raw),  # a room member writes into alice's slot as alice
            "floatGen": signed(alice, raw.replace(b'"gen":0', b'"gen":0.0')),
            "bigGen": signed(alice, raw.replace(b'"gen":0', b'"gen":9007199254740993')),
            "badType": signed(alice, raw.replace(b'"bye"', b'"hello"')),
            "badSid": signed(alice, raw.replace(SID_A.encode(), SID_A.encode() + b"\\n")),
            "noSdp": signed(alice, raw.replace(b'"bye"', b'"offer"')),
            "v2": signed(alice, raw.replace(b'"v":1', b'"v":2')),
            "deep": signed(alice, b"[" * 30000 + b"]" * 30000),
            "notUtf8": signed(alice, b'{"v":1,"name":"\xff"}'),
            "notJson": signed(alice, b"{v:1}"),
        },
        "deep": wire.seal(keys, b"presence", bytes(32), pair_key, b"[" * 50000).hex(),
        "presence": wire.encode_presence(keys, bytes(32), pair_key, []).hex(),
        "settings": {
            name: wire.encode_settings(keys, alice, bytes(32), pair_key, [wire.TurnServer(url, "u", "p")], 1).hex()
            for name, url in (("stun", "stun:203.0.113.1"), ("space", "turn:evil host"), ("newline", "turn:a\n"),
                              ("sctp", "turn:a?transport=sctp"))},
    })
    assert all(e is not None and e.startswith("WireError: ") for e in got["flips"]), got["flips"]
    errors = got["errors"]
    expected = {
        "forged": "message signature does not verify", "floatGen": "message field 'gen' is not an integer",
        "bigGen": "message field 'gen' is not an integer", "badType": 'unknown message type "hello"',
        "badSid": "message field 'from' is not a session id", "noSdp": "offer/answer without an SDP",
        "v2": "message body has an unknown version", "deep": "message body nests deeper than 8 levels",
        "notUtf8": "message body is not valid UTF-8", "notJson": "message body is not JSON",
        "wrongPassword": "message was sealed for another slot", "otherSlot": "message was sealed for another slot",
        "otherAuthor": "message was sealed for another slot", "huge": "sealed blob too large",
        "notOurs": "not an sdparta v1 envelope", "deepPresence": "presence list nests deeper than 8 levels",
        "presenceAsSettings": "room settings do not open", "stun": "a room TURN entry has an invalid URL",
        "space": "a room TURN entry has an invalid URL", "newline": "a room TURN entry has an invalid URL",
        "sctp": "a room TURN entry has an invalid URL",
    }
    assert {k: v for k, v in errors.items()} == {k: errors[k] for k in expected}
    for name, start in expected.items():
        assert errors[name] is not None and errors[name].startswith("WireError: " + start), (name, errors[name])


def test_tampered_nostr_events_and_records_are_rejected(web: Web, keys: RoomKeys, alice: Identity) -> None:
    nostr_key, other = NostrKey(), NostrKey()
    tags = RoomTags(keys)
    blob = encode_presence_record(keys, alice, SID_A, bytes.fromhex(nostr_key.pubkey), "alice", 5)
    event = nostr_key.addressable(tags.presence_d(SID_A), b64(blob), [("x", tags.room)]).to_dict()

    def variant(**changes: Any) -> str:
        return json.dumps({**event, **changes})

    got = web.run("""const K = await T.room(); const N = C.nostrWire;
        const out = {};
        for (const [name, text] of Object.entries(a.events)) out[name] = await T.error(() => C.nostr.parseEvent(text));
        const blob = T.ux(a.blob);
        out.otherKey = await T.error(() => N.decodePresenceRecord(K, T.ux(a.other), a.d, blob));
        out.otherD = await T.error(() => N.decodePresenceRecord(K, T.ux(a.pubkey), a.otherD, blob));
        out.notBase64 = await T.error(() => N.unb64("not base64!", 100));
        out.spaces = await T.error(() => N.unb64("AAAA AAAA", 100));
        out.tooLong = await T.error(() => N.unb64("A".repeat(1000), 100));
        out.ok = (await N.decodePresenceRecord(K, T.ux(a.pubkey), a.d, blob)).member.name;
        return out;""", {
        "blob": blob.hex(), "pubkey": nostr_key.pubkey, "other": other.pubkey, "d": tags.presence_d(SID_A),
        "otherD": tags.presence_d(SID_B),
        "events": {"content": variant(content=event["content"][:-4] + "AAAA"),
                   "createdAt": variant(created_at=event["created_at"] + 1),
                   "floatTime": variant(created_at=float(event["created_at"])),
                   "sig": variant(sig=("0" if event["sig"][0] != "0" else "1") + event["sig"][1:]),
                   "pubkey": variant(pubkey=other.pubkey), "upper": variant(id=event["id"].upper()),
                   "missing": json.dumps({k: v for k, v in event.items() if k != "sig"}),
                   "deep": json.dumps({**event, "tags": [[["x"]]]}), "huge": "x" * 600000,
                   "notOnCurve": variant(pubkey="f" * 64)}})
    assert got["ok"] == "alice"
    reasons = {"content": "id-mismatch", "createdAt": "id-mismatch", "floatTime": "malformed", "sig": "bad-signature",
               "pubkey": "id-mismatch", "upper": "malformed", "missing": "malformed", "deep": "malformed",
               "huge": "too-large", "notOnCurve": "id-mismatch"}
    for name, reason in reasons.items():
        assert got[name] is not None and got[name].startswith(f"InvalidEvent: {reason}"), (name, got[name])
    for name in ("otherKey", "otherD", "notBase64", "spaces", "tooLong"):
        assert got[name] is not None and got[name].startswith("WireError: "), (name, got[name])


def test_nostr_presence_records_with_content_off_decode_as_in_python(web: Web, keys: RoomKeys,
                                                                    alice: Identity) -> None:
    nostr_key = NostrKey()
    nk = bytes.fromhex(nostr_key.pubkey)
    tags = RoomTags(keys)
    good = json.loads(wire.open_sealed(keys, b"nostr-presence", nk, tags.presence_key(SID_A), encode_presence_record(
        keys, alice, SID_A, nk, "alice", 1700000000000), 4096))

    def sealed(body: Any, sid: str = SID_A) -> str:
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return wire.seal(keys, b"nostr-presence", nk, tags.presence_key(sid), raw).hex()

    without_left = {k: v for k, v in good.items() if k != "left"}
    cases = {"good": sealed(good), "left": sealed({**good, "left": 1}), "noLeft": sealed(without_left),
             "otherSid": sealed({**good, "sid": SID_B}, SID_B), "v0": sealed({**good, "v": 0}),
             "name": sealed({**good, "name": " alice"}), "ts": sealed({**good, "ts": 1700000000001}),
             "floatTs": sealed({**good, "ts": 1700000000000.0}), "list": sealed([good]),
             "pk": sealed({**good, "pk": "00" * 32}), "big": sealed({**good, "name": "x" * 3000})}
    got = web.run("""const K = await T.room(); const out = {};
        for (const [name, hex] of Object.entries(a.cases)) {
          try {
            const r = await C.nostrWire.decodePresenceRecord(K, T.ux(a.nk), a.d, T.ux(hex));
            out[name] = [T.hx(r.publicKey), r.sessionId, r.tsMs, r.member === null];
          } catch (e) { out[name] = e.name; }
        }
        return out;""", {"cases": cases, "nk": nk.hex(), "d": tags.presence_d(SID_A)})
    for name, blob in cases.items():
        try:
            record = decode_presence_record(keys, nk, tags.presence_d(SID_A), bytes.fromhex(blob))
            expected: Any = [record.public_key.hex(), record.session_id, record.ts_ms, record.member is None]
        except wire.WireError:
            expected = "WireError"
        assert got[name] == expected, name
    assert got["good"] == [alice.public_key.hex(), SID_A, 1700000000000, False]


def test_a_valid_id_with_a_key_off_the_curve_is_bad_pubkey(web: Web) -> None:
    """An event whose id is right but whose pubkey is no secp256k1 x coordinate (x ≥ p)."""
    from sdparta.nostr.event import compute_id

    pubkey = "f" * 64
    event = {"pubkey": pubkey, "created_at": 1, "kind": 30078, "tags": [], "content": "", "sig": "0" * 128,
             "id": compute_id(pubkey, 1, 30078, [], "")}
    assert web.run("return T.error(() => C.nostr.verifyEvent(a))", event).startswith("InvalidEvent: bad-pubkey")


def test_canonical_json_and_names_match_python(web: Web) -> None:
    values = [{"b": 1, "a": [True, False, None], "é": "ü\u2028\U0001f600\u007f\x00\x1f\"\\/", "A": -5},
              {"z": {"y": {"x": "\ud800"}}}, [], {}, "plain"]
    names = ["alice", "  bob  ", "a\tb\nc", "Zoë\u200b😀", "\u00a0x\u00a0", "", "\u0007", "x" * 60,
             "a" * 47 + " b", "e\u0301", "\u2028\u2029", "\ufeffname", "ab\U000e0001cd"]
    got = web.run("return {json: a.values.map((v) => C.json.canonicalJson(v)), names: a.names.map(C.wire.cleanName)};",
                  {"values": values, "names": names})
    assert got["json"] == [json.dumps(v, separators=(",", ":"), sort_keys=True) for v in values]
    assert got["names"] == [wire.clean_name(n) for n in names]


def _random_text(rng: random.Random) -> str:
    pools = ["abc xyz", "\x00\x01\x1f\x7f\"\\/\b\f\n\r\t", "éüß€\u2028\u2029\ufeff\u200b", "😀🩷\U0010ffff",
             "\ud800"]  # a lone high surrogate: a low one after it would be a pair in JavaScript, not in Python
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(0, 24)))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([0, -1, 1, 2**53 - 1, -(2**53 - 1), rng.randrange(-10**12, 10**12)])
    if kind in (2, 3):
        return _random_text(rng)
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_canonical_json_of_random_values_and_random_messages_match_python(web: Web, keys: RoomKeys,
                                                                          alice: Identity) -> None:
    """Seeded random values (controls, surrogates, astral characters, nested keys) encode to the
    bytes Python signs; random offers sealed on either side open on the other."""
    rng = random.Random(13)
    values = [_random_value(rng) for _ in range(300)]
    offers = [{"v": 1, "type": "offer", "from": SID_A, "to": SID_B, "gen": rng.randrange(2**31),
               "ts": rng.randrange(2**41), "name": wire.clean_name(_random_text(rng)),
               "sdp": _random_text(rng).replace("\ud800", "")} for _ in range(20)]
    pair_key = keys.data_key("pair", SID_A, SID_B)
    got = web.run("""const K = await T.room(); const me = await T.alice(); const dk = T.ux(a.pairKey);
        const opened = [];
        for (const hex of a.sealed) opened.push(await C.wire.decodeMessage(K, me.publicKey, dk, T.ux(hex)));
        const sealed = [];
        for (const offer of a.offers) sealed.push(T.hx(await C.wire.encodeMessage(K, me, dk, offer)));
        return {json: a.values.map((v) => C.json.canonicalJson(v)), opened, sealed};""",
        {"values": values, "offers": offers, "pairKey": pair_key.hex(),
         "sealed": [wire.encode_message(keys, alice, pair_key, o).hex() for o in offers]})
    assert got["json"] == [json.dumps(v, separators=(",", ":"), sort_keys=True) for v in values]
    assert got["opened"] == offers
    assert [wire.decode_message(keys, alice.public_key, pair_key, bytes.fromhex(h)) for h in got["sealed"]] == offers


JSON_TEXTS = ['{"gen":1,"ts":1.0,"r":18446744073709551615,"s":"1.5 \\" 2e3","n":[-0,0.5e-3,-12,9007199254740993]}',
              '[1e2, 2E-2, -0.0, 123456789012345678901234567890, "\\u0000n9", {"a": [3]}]', '"x"', "7", "-7.25"]


def test_numbers_keep_their_python_types_with_or_without_json_source_access(web: Web) -> None:
    """1.0 is a float (not an int), big integers stay exact: the same with JSON.parse source text access
    (Chromium) and with the fallback for browsers that lack it."""
    got = web.run("""const show = (v) => v instanceof C.json.JsonFloat ? ["float", v.value]
            : typeof v === "bigint" ? ["bigint", v.toString()] : Array.isArray(v) ? v.map(show)
            : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, show(x)])) : v;
        return {access: C.json.SOURCE_ACCESS,
                exact: a.map((t) => show(C.json.parseNumbersExactly(t, true))),
                fallback: a.map((t) => show(C.json.parseNumbersExactly(t, false)))};""", JSON_TEXTS)
    assert got["access"] is True
    assert got["exact"] == got["fallback"]
    assert got["exact"][0] == {"gen": 1, "ts": ["float", 1], "r": ["bigint", str(2**64 - 1)], "s": "1.5 \" 2e3",
                               "n": [0, ["float", 0.0005], -12, ["bigint", "9007199254740993"]]}
    assert got["exact"][4] == ["float", -7.25]


def test_presence_lists_and_settings_decode_as_in_python(web: Web, keys: RoomKeys) -> None:
    """Hand-made bodies (sealed and signed properly, content off) give the browser the same members,
    rejection counts, TURN lists and refusals as wire.py."""
    slot, presence_key, settings_key = bytes(32), keys.data_key("presence"), keys.data_key("settings")
    people = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(70)]
    members = [wire.sign_member(keys, p, f"{i:016x}", f"member {i}", 1700000000000 + i) for i, p in enumerate(people)]
    record = {"pk": members[0].public_key.hex(), "sid": members[0].session_id, "name": members[0].name,
              "ts": members[0].ts_ms, "sig": members[0].signature.hex()}

    def presence(records: list[Any]) -> str:
        raw = json.dumps({"v": 1, "members": records}, separators=(",", ":"), sort_keys=True).encode()
        return wire.seal(keys, b"presence", slot, presence_key, raw).hex()

    def settings(turn: list[Any], **extra: Any) -> str:
        signer = people[0]
        body = {"v": 1, "author": signer.public_key.hex(), "ts": 1, "turn": turn, **extra}
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        signature = signer.sign(b"sdparta/v1/settings\x00" + keys.room_id + settings_key + raw)
        return wire.seal(keys, b"settings", slot, settings_key, signature + raw).hex()

    turn = {"url": "turns:relay.example:5349?transport=tcp", "username": "u", "credential": "p"}
    lists = {
        "full": presence([{"pk": m.public_key.hex(), "sid": m.session_id, "name": m.name, "ts": m.ts_ms,
                           "sig": m.signature.hex()} for m in members]),
        "odd": presence([record, 5, [], {**record, "name": "member 0 "}, {**record, "ts": 1.5}, {**record, "ts": -1},
                         {**record, "sid": "ABCDEF0123456789"}, {**record, "pk": "zz"}, {**record, "sig": 7},
                         {k: v for k, v in record.items() if k != "name"}, {**record, "ts": True}, record]),
        "shape": wire.seal(keys, b"presence", slot, presence_key, b'{"v":1,"members":{}}').hex(),
        "v2": wire.seal(keys, b"presence", slot, presence_key, b'{"v":2,"members":[]}').hex(),
    }
    configs = {
        "many": settings([turn] * 6), "long": settings([{**turn, "credential": "é" * 256}]),
        "tooLong": settings([{**turn, "credential": "é" * 257}]), "notObject": settings(["turn:a"]),
        "noUser": settings([{"url": turn["url"], "credential": "p"}]), "v2": settings([turn], v=2),
        "floatTs": settings([turn], ts=1.0), "shortAuthor": settings([turn], author="00" * 31),
        "notList": settings({"url": "x"}),  # type: ignore[arg-type]
    }
    got = web.run("""const K = await T.room(); const slot = new Uint8Array(32);
        const pk = await K.dataKey("presence"), sk = await K.dataKey("settings");
        const lists = {}, configs = {};
        for (const [name, hex] of Object.entries(a.lists)) {
          try {
            const r = await C.wire.decodePresence(K, slot, pk, T.ux(hex));
            lists[name] = [r.members.map((m) => m.sessionId), r.rejected];
          } catch (e) { lists[name] = e.name; }
        }
        for (const [name, hex] of Object.entries(a.configs)) {
          try {
            configs[name] = (await C.wire.decodeSettings(K, slot, sk, T.ux(hex))).turn;
          } catch (e) { configs[name] = e.name; }
        }
        return {lists, configs};""", {"lists": lists, "configs": configs})
    for name, blob in lists.items():
        try:
            found, rejected = wire.decode_presence(keys, slot, presence_key, bytes.fromhex(blob))
            expected: Any = [[m.session_id for m in found], rejected]
        except wire.WireError:
            expected = "WireError"
        assert got["lists"][name] == expected, name
    for name, blob in configs.items():
        try:
            expected = [{"url": t.url, "username": t.username, "credential": t.credential}
                        for t in wire.decode_settings(keys, slot, settings_key, bytes.fromhex(blob)).turn]
        except wire.WireError:
            expected = "WireError"
        assert got["configs"][name] == expected, name
    assert len(got["lists"]["full"][0]) == 64 and got["configs"]["many"] == [turn] * 4
    assert got["lists"]["odd"] == [[members[0].session_id] * 2, 10]
    assert got["configs"]["long"] != "WireError" and got["configs"]["tooLong"] == "WireError"


SIGNED_NAMES = ["alice", "  alice\n\u0007 ", "a" * 47 + " b", "x" * 60, "", "Zoë\u200b 😀", "\u00a0"]


def test_names_the_browser_signs_are_accepted_by_python(web: Web, keys: RoomKeys) -> None:
    """wire.py signs clean_name(name), which can end in a space when the cut at 48 characters falls
    after one; readers then reject the record (the name is not its own clean_name). The browser signs
    that name without the trailing spaces, so its records are accepted everywhere."""
    got = web.run("""const K = await T.room(); const me = await T.alice(); const slot = new Uint8Array(32);
        const members = [];
        for (const [i, name] of a.names.entries()) members.push(await C.wire.signMember(K, me, a.sid, name, i));
        const dk = await K.dataKey("presence");
        return T.hx(await C.wire.encodePresence(K, slot, dk, members));""", {"names": SIGNED_NAMES, "sid": SID_A})
    members, rejected = wire.decode_presence(keys, bytes(32), keys.data_key("presence"), bytes.fromhex(got))
    assert rejected == 0
    assert [m.name for m in members] == [wire.clean_name(n).rstrip(" ") for n in SIGNED_NAMES]


def test_a_name_with_a_newer_emoji_signed_in_the_browser_is_accepted_by_python(web: Web, keys: RoomKeys) -> None:
    got = web.run("""const K = await T.room(); const me = await T.alice();
        const member = await C.wire.signMember(K, me, "0011223344556677", a, 1);
        return [member.name, T.hx(await C.wire.encodePresence(K, new Uint8Array(32), await K.dataKey("presence"),
                                                                [member]))];""", "pink \U0001fa77 heart")
    assert got[0] == "pink \U0001fa77 heart", "Chromium keeps the character"
    members, rejected = wire.decode_presence(keys, bytes(32), keys.data_key("presence"), bytes.fromhex(got[1]))
    assert rejected == 0 and [m.name for m in members] == [got[0]]


CONTROL_MESSAGES = [
    '{"t":"ping"}', '{"t":"chat","text":"hi\\u0007 there \\ud83d\\ude00\\u202e","ts":1}', '{"t":5}', "[]", "nope",
    '{"t":"state","name":"a","muted":[],"camera_off":{},"audio_only":"x"}', '{"t":"state","muted":1,"camera_off":0.0}',
    '{"t":"signal","body":{"type":"offer","sdp":"v=0","gen":2}}', '{"t":"signal","body":{"type":"offer","sdp":"v=0",'
    '"gen":true}}', '{"t":"signal","body":{"type":"answer","sdp":"v=0","gen":1.0}}', '{"t":"chat","text":7}',
    '{"t":"chat","text":"' + "é" * 2100 + '"}', '{"t":"chat","text":"' + "x" * 16400 + '"}', "[" * 9 + "]" * 9,
    '{"t":"bye"}', '{"t":"restart"}',
]


def test_data_channel_messages_read_as_the_engine_reads_them(web: Web) -> None:
    from sdparta.engine.negotiation import _valid_signal
    from sdparta.engine.peer import MAX_CHAT_CHARS, PeerLink

    got = web.run("""const H = C.channel;
        return a.map((raw) => {
          const m = H.parseControl(raw);
          if (m === null) return null;
          return {t: m.t, chat: H.chatText(m), state: m.t === "state" ? H.peerState(m) : null,
                  signal: m.t === "signal" ? H.validSignal(m.body) : null};
        });""", CONTROL_MESSAGES)
    for raw, item in zip(CONTROL_MESSAGES, got, strict=True):
        message = PeerLink.parse_control(raw)
        if message is None:
            assert item is None, raw[:60]
            continue
        chat = ("".join(ch for ch in message["text"] if ch.isprintable())[:MAX_CHAT_CHARS]
                if message["t"] == "chat" and isinstance(message.get("text"), str) else None)
        state = ({"muted": bool(message.get("muted")), "cameraOff": bool(message.get("camera_off")),
                  "audioOnly": bool(message.get("audio_only"))} if message["t"] == "state" else None)
        signal = _valid_signal(message.get("body")) if message["t"] == "signal" else None
        assert item == {"t": message["t"], "chat": chat, "state": state, "signal": signal}, raw[:60]
    assert web.run("return C.channel.encodeControl(a)", {"t": "chat", "text": "é", "ts": 1}) == (
        '{"t":"chat","text":"\\u00e9","ts":1}')
    assert web.run("return C.channel.encodeControl({t: 'chat', text: 'x'.repeat(17000)})") is None


def test_the_offerer_of_a_pair_is_the_one_python_picks(web: Web) -> None:
    from sdparta.engine.negotiation import offers_first

    rng = random.Random(7)
    keys_ = [bytes(32), b"\x01" * 32, b"\x00" * 31 + b"\x01", b"\xff" * 32, rng.randbytes(32), rng.randbytes(32)]
    sessions = [SID_A, SID_B, "0011223344556678"]
    pairs = [(a, s1, b, s2) for a in keys_ for b in keys_ for s1 in sessions for s2 in sessions]
    got = web.run("""return a.map(([ours, sid, theirs, other]) =>
        C.wire.offersFirst(T.ux(ours), sid, {publicKey: T.ux(theirs), sessionId: other}));""",
                  [[a.hex(), s1, b.hex(), s2] for a, s1, b, s2 in pairs])
    expected = [offers_first(a, s1, wire.Member(b, s2, "x", 0, bytes(64))) for a, s1, b, s2 in pairs]
    assert got == expected and any(got) and not all(got)


def test_fingerprint_and_identicon_match_the_terminal(web: Web) -> None:
    public_keys = [Identity.from_seed(bytes([i]) * 32).public_key for i in range(12)] + [bytes.fromhex(IDENTITY_PUBLIC)]
    got = web.run("""return a.map((pk) => {
          const fp = C.keys.fingerprint(T.ux(pk)); const icon = C.identicon.identicon(fp);
          return {fp, grid: C.identicon.identiconGrid(fp), colours: C.identicon.identiconColours(fp), icon};
        });""", [pk.hex() for pk in public_keys])
    for pk, item in zip(public_keys, got, strict=True):
        fp = fingerprint(pk)
        assert item["fp"] == fp
        assert item["grid"] == identicon_grid(fp)
        assert item["colours"] == identicon_colours(fp)
        icon = item["icon"]
        assert icon["rows"] == item["grid"] and icon["size"] == 7
        assert [[" .oO@"[n] for n in row] for row in icon["cells"]] == [list(r) for r in item["grid"]]
        assert icon["colours"] == [None, *(identicon_colours(fp)[level] for level in ".oO@")]
    assert got[-1]["fp"] == IDENTITY_FINGERPRINT


def test_the_single_file_build_of_the_page_loads(web: Web) -> None:
    """The pinned page (one HTML file: modules as blob: URLs, no import map) loads the same core."""
    build = app_build.build(load_web_dir(WEB).raw)
    link = skylink_for_content(build.html)
    page = web.page.context.browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    try:
        page.goto(f"{web.portal.url}/{link}")
        page.wait_for_selector("html[data-core]", state="attached")  # no eval: the CSP forbids it
        assert page.evaluate("document.documentElement.dataset.core") == "ready"
        assert errors == []
    finally:
        page.close()


def test_room_settings_with_an_sfu_entry_both_ways(web: Web, keys: RoomKeys, alice: Identity) -> None:
    """§5a's SFU entry: Python's record opens in the browser with the entry carried as is; an entry out of
    the room's bounds (too deep, too large) is dropped and said (``sfuRejected``) with the TURN relay still
    the record's, as Python's reader does; the browser's record with an entry opens in Python the same."""
    slot, data_key = bytes(32), keys.data_key("settings")
    sfu = {"type": "janus", "url": "wss://sfu.example/janus", "room": 1234, "pin": None}
    records = {
        "good": wire.encode_settings(keys, alice, slot, data_key, TURN, 1700000000001, sfu=sfu),
        "none": wire.encode_settings(keys, alice, slot, data_key, TURN, 1700000000002),
    }

    def signed_body(body: dict[str, Any]) -> bytes:  # a record whose sfu value Python's writer refuses
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        signature = alice.sign(b"sdparta/v1/settings\x00" + keys.room_id + data_key + raw)
        return wire.seal(keys, b"settings", slot, data_key, signature + raw)

    turn = [{"url": t.url, "username": t.username, "credential": t.credential} for t in TURN]
    base = {"v": 1, "author": alice.public_key.hex(), "ts": 1700000000003, "turn": turn}
    records["deep"] = signed_body({**base, "sfu": {"type": "janus", "x": {"y": {"z": 1}}}})
    records["large"] = signed_body({**base, "sfu": {"type": "janus", "url": "x" * 2100}})
    records["list"] = signed_body({**base, "sfu": ["janus"]})
    for name, blob in records.items():  # Python's reader, for comparison
        decoded = wire.decode_settings(keys, slot, data_key, blob)
        assert (decoded.sfu is None) == (name != "good")
        assert (decoded.sfu_rejected is None) == (name in ("good", "none"))
    got = web.run("""const K = await T.room(); const W = C.wire;
        const out = {};
        for (const [name, hex] of Object.entries(a.records)) {
          const s = await W.decodeSettings(K, T.ux(a.slot), T.ux(a.key), T.ux(hex));
          out[name] = {sfu: s.sfu, rejected: s.sfuRejected, turn: s.turn.map((t) => t.url), ts: s.tsMs};
        }
        const me = await T.alice();
        const written = await W.encodeSettings(K, me, T.ux(a.slot), T.ux(a.key), [], 1700000000009, undefined, a.sfu);
        out.written = T.hx(written);
        out.refused = await T.error(() => W.encodeSettings(K, me, T.ux(a.slot), T.ux(a.key), [], 1, undefined, ["x"]));
        return out;""", {"records": {k: v.hex() for k, v in records.items()}, "slot": slot.hex(), "key": data_key.hex(),
                          "sfu": sfu})
    assert got["good"] == {"sfu": sfu, "rejected": None, "turn": [TURN[0].url], "ts": 1700000000001}
    assert got["none"]["sfu"] is None and got["none"]["rejected"] is None
    for name in ("deep", "large", "list"):
        assert got[name]["sfu"] is None and got[name]["rejected"], got[name]
        assert got[name]["turn"] == [TURN[0].url]  # the rest of the record is still the room's
    written = wire.decode_settings(keys, slot, data_key, bytes.fromhex(got["written"]))
    assert written.sfu == sfu and written.turn == () and written.ts_ms == 1700000000009
    assert got["refused"] and got["refused"].startswith("WireError")
