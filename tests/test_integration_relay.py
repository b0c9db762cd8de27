"""Loopback integration over Nostr relays: real relay processes and real bots, against both relay
implementations (PyPI nostr-relay 1.14 and the TypeScript @nostr-relay/core 0.0.40): three bots and
the privacy dump and a restart on each, one of two relays down with one of each (either one down).
The portal + relay test runs on the PyPI relay only: what it adds is the portal dying, the relay's
part is covered by the others, and its soak is the longest here.

The portal's integration tests, over relays only: three bots, every pair connected, tones at their
pitch, video, chat, a SIGKILLed bot reported gone within the relay bound, a fresh bot joining the
survivors; one of two relays down; a relay restarted mid-call; a room on a portal and a relay with
the portal killed. After a call, nothing the relay stored reveals the room, a name, an SDP, an
address or a chat line.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdparta.room.events import SessionTiming
from sdparta.room.nostr_room import NOSTR_TIMING
from sdparta.room.wire import MAGIC, NONCE_LEN
from support.nostr_relay import IMPLEMENTATIONS, RelayFactory, RelayProcess
from support.procs import BotProcess, peers_by_name, start_bot, start_portal, wait_for
from test_integration import TONES, _assert_hears, _connected_to, _diagnose, _run_room

pytestmark = pytest.mark.integration

#: A crashed member is gone once its record is stale (relay TTL) — its connection says reconnecting first.
RELAY_GONE_BOUND_S = NOSTR_TIMING.ttl + 10
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[RelayFactory]:
    with RelayFactory(tmp_path) as factory:
        yield factory


each_relay = pytest.mark.parametrize("implementation", IMPLEMENTATIONS)


def _relay_args(*relays: RelayProcess | str) -> list[str]:
    return [arg for r in relays for arg in ("--relay", r if isinstance(r, str) else r.url)]


def _assert_opaque(relay: RelayProcess, room: str, names: list[str]) -> None:
    """No stored event reveals the call: the fields beside the content (hex, numbers, tags) hold none of
    its secrets, and every content is strict base64 of "SDP1" || nonce || ciphertext that does not
    compress (plaintext JSON or SDP would shrink by half or more).

    The secrets are not searched for in the base64 or the ciphertext: those are random text, and a
    short one (``bot1``, ``v=0``) turns up in a relay's worth of random text now and then (CI saw
    ``…PeHbot1i0a…``). Long ones still are, where a chance match is out of reach (256**-7 a byte)."""
    stored = relay.stored_events()
    assert stored, "the relay stored nothing: the test proves nothing"
    fields = json.dumps([{k: v for k, v in e.items() if k != "content"} for e in stored])
    secrets = [room, *names, "hello from", "v=0", "a=candidate", "m=audio", "ice-ufrag", "fingerprint:sha-256"]
    for secret in secrets:
        assert secret not in fields, f"{secret!r} is stored in clear"
    assert not _IPV4.search(json.dumps(stored)), "an IP address is stored in clear"
    for event in stored:
        blob = base64.b64decode(event["content"], validate=True)
        assert blob.startswith(MAGIC), f"a stored content is not sealed: {blob[:40]!r}"
        body = blob[len(MAGIC) + NONCE_LEN:]
        assert len(zlib.compress(body, 9)) >= len(body), f"a stored content compresses: not ciphertext {body[:40]!r}"
        text = blob.decode("latin-1")
        for secret in (s for s in secrets if len(s) >= 7):
            assert secret not in text, f"{secret!r} is stored in clear"
        # only room-keyed HMAC tags: d and x, 64 hex digits each
        assert {t[0] for t in event["tags"]} <= {"d", "x"}
        assert all(re.fullmatch(r"[0-9a-f]{64}", t[1]) for t in event["tags"])


@each_relay
def test_three_bots_over_a_relay_only(tmp_path: Path, relays: RelayFactory, implementation: str) -> None:
    relay = relays.start(implementation=implementation)
    room = "relay-only-room"
    # The crash (bot3 SIGKILLed, gone once its record is stale: 150 s) runs on one relay only: how a
    # member goes stale is the client's reading of the record's own ts, whichever relay serves it.
    crash = implementation == "python"
    _run_room(tmp_path, [], room, extra=_relay_args(relay), gone_bound=RELAY_GONE_BOUND_S, crash=crash)
    for name in ("bot1", "bot2", "bot4") if crash else ("bot1", "bot2", "bot3"):
        report = json.loads((tmp_path / f"{name}.json").read_text())
        [network] = report["networks"]
        assert network["kind"] == "relay" and network["url"] == relay.url and network["sent"] > 0
        assert report["requests"]["conflicts"] == 0
    _assert_opaque(relay, room, ["bot1", "bot2", "bot3", "bot4"])


@pytest.mark.parametrize("down", IMPLEMENTATIONS)
def test_one_of_two_relays_down(tmp_path: Path, relays: RelayFactory, down: str) -> None:
    """A relay of each implementation; the ``down`` one is SIGKILLed before the room (its port then
    refuses connections): the room goes on over the other."""
    [up] = set(IMPLEMENTATIONS) - {down}
    relay, gone = relays.start(implementation=up), relays.start(implementation=down)
    gone.kill()
    bots = _run_room(tmp_path, [], "two-relay-room", extra=_relay_args(gone, relay), crash=False)
    networks = {n["url"]: n for n in bots["bot1"].report()["networks"]}  # type: ignore[index]
    assert networks[relay.url]["sent"] > 0 and networks[relay.url]["received"] > 0
    assert networks[gone.url]["sent"] == 0 and networks[gone.url]["received"] == 0  # never reached: the room went on


def _start(tmp_path: Path, room: str, name: str, portals: list[str], extra: list[str]) -> BotProcess:
    return start_bot(tmp_path, room, portals, name, tone=TONES[name], chat=f"hello from {name}", extra=extra)


@each_relay
def test_a_relay_restarted_mid_call(tmp_path: Path, relays: RelayFactory, implementation: str) -> None:
    """The call goes on through the restart, and afterwards the relay carries the room again: a bot
    joining then meets both (our subscription was re-sent, our record re-published)."""
    relay = relays.start(implementation=implementation)
    room, extra = "restart-relay-room", _relay_args(relay)
    bots = {n: _start(tmp_path, room, n, [], extra) for n in ("bot1", "bot2")}
    everyone = list(bots.values())
    try:
        wait_for(lambda: _connected_to(bots["bot1"], {"bot2"}) and _connected_to(bots["bot2"], {"bot1"}), 60,
                 "the first two connected", diagnostics=lambda: _diagnose(everyone))
        relay.restart()
        bots["bot3"] = _start(tmp_path, room, "bot3", [], extra)
        everyone.append(bots["bot3"])
        for name, others in (("bot3", {"bot1", "bot2"}), ("bot1", {"bot2", "bot3"}), ("bot2", {"bot1", "bot3"})):
            wait_for(lambda b=bots[name], o=others: _connected_to(b, o), 90, f"{name} connected after the restart",
                     diagnostics=lambda: _diagnose(everyone))
        report = bots["bot1"].report() or {}
        assert report["networks"][0]["state"] == "open"
        assert all(p["status"] == "connected" for p in peers_by_name(report).values())
    finally:
        for bot in bots.values():
            bot.stop()


def test_portal_and_relay_with_the_portal_killed(tmp_path: Path, relays: RelayFactory) -> None:
    """A room on a portal and a relay: the portal dies, nobody is reported gone once the portal's
    records go stale (the relay still carries everyone), and a newcomer still meets the room."""
    relay = relays.start()
    portal = start_portal(tmp_path / "portal.sqlite3")
    room, extra = "portal-and-relay-room", _relay_args(relay)
    bots = {n: _start(tmp_path, room, n, [portal.url], extra) for n in ("bot1", "bot2")}
    everyone = list(bots.values())
    try:
        wait_for(lambda: _connected_to(bots["bot1"], {"bot2"}) and _connected_to(bots["bot2"], {"bot1"}), 60,
                 "the first two connected", diagnostics=lambda: _diagnose(everyone))
        portal.stop()
        bots["bot3"] = _start(tmp_path, room, "bot3", [portal.url], extra)
        everyone.append(bots["bot3"])
        for name, others in (("bot3", {"bot1", "bot2"}), ("bot1", {"bot2", "bot3"}), ("bot2", {"bot1", "bot3"})):
            wait_for(lambda b=bots[name], o=others: _connected_to(b, o), 90, f"{name} connected without the portal",
                     diagnostics=lambda: _diagnose(everyone))
        # a soak, not a wait for a condition: past the portal's record lifetime its copies of everyone
        # are stale, and a member must not be reported gone while the relay still carries it
        time.sleep(SessionTiming().ttl + 10)
        for name, bot in bots.items():
            peers = peers_by_name(bot.report())
            assert all(p["status"] == "connected" for p in peers.values()), (name, _diagnose(everyone))
            assert len(peers) == 2
    finally:
        for bot in bots.values():
            bot.stop()
    for name in ("bot1", "bot2"):
        _assert_hears(bots[name], name, [n for n in ("bot1", "bot2") if n != name])
