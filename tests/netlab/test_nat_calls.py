"""Real `sdparta bot` processes behind real NATs (network namespaces, iptables, Debian's coturn):
each topology of issue 4 connects — or fails with the diagnosis that names the fix — and a pair
whose NAT box loses its uplink for 10 s comes back by ICE restart without rejoining."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.procs import BotProcess, peers_by_name, start_bot, wait_for

pytestmark = pytest.mark.netlab

CONNECT_TIMEOUT = 12.0  # the bots' own connect timeout in the lab (seconds)


@dataclass
class Pair:
    a: BotProcess
    b: BotProcess

    def peer(self, bot: BotProcess) -> dict[str, Any]:
        other = "b" if bot is self.a else "a"
        return peers_by_name(bot.report()).get(other, {})

    def both(self) -> list[tuple[BotProcess, dict[str, Any]]]:
        return [(bot, self.peer(bot)) for bot in (self.a, self.b)]

    def describe(self) -> str:
        lines = []
        for bot, peer in self.both():
            report = bot.report() or {}
            states = [s["state"] for s in peer.get("states", []) if s["kind"] in ("peer", "connection")]
            lines.append(f"{bot.name}: {peer.get('status')} path={peer.get('path')} "
                         f"pair={peer.get('selected_pair')} reason={peer.get('failure_reason')} "
                         f"restarts={peer.get('restarts')} audio={peer.get('audio_seconds')} states={states[-8:]} "
                         f"notices={[n['text'] for n in report.get('notices', [])][-3:]}")
            log = [line for line in bot.log_path.read_text().splitlines() if " httpx " not in line]
            lines.append("  log: " + " | ".join(log[-12:]))
        return "\n".join(lines)


def start_pair(lab: Any, tmp_path: Path, hosts: tuple[Any, Any], portal: str, *,
               flags: tuple[list[str], list[str]] = ([], []), env: dict[str, str] | None = None) -> Pair:
    bots = []
    for name, host, extra in zip(("a", "b"), hosts, flags, strict=True):
        bots.append(start_bot(tmp_path, "lab-room", [portal], name, tone=440 if name == "a" else 660,
                              video="none", record=False,
                              extra=["--connect-timeout", str(CONNECT_TIMEOUT), *extra],
                              argv_prefix=host.exec_prefix(env)))
    return Pair(*bots)


@pytest.fixture
def stopped() -> Iterator[list[Pair]]:
    """Pairs to stop (by PID) whatever the test's outcome."""
    pairs: list[Pair] = []
    yield pairs
    for pair in pairs:
        pair.a.stop()
        pair.b.stop()


def stun_flags(coturn: Any) -> list[str]:
    return ["--stun", coturn.stun_url()]


def turn_flags(coturn: Any, transport: str = "udp", password: str | None = None) -> list[str]:
    return ["--turn", coturn.url(transport), "--turn-user", coturn.user,
            "--turn-password", password or coturn.password]


def wait_connected(pair: Pair, timeout: float = 30) -> None:
    wait_for(lambda: all(peer.get("status") == "connected" and peer.get("audio_seconds", 0) > 1
                         for _, peer in pair.both()), timeout, "a and b connected and hearing each other",
             diagnostics=pair.describe)


def test_endpoint_independent_nats_connect_over_stun(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", "eim"), lab.add_private("b", "eim")
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(stun_flags(coturn), stun_flags(coturn)))
    stopped.append(pair)
    wait_connected(pair)
    for _, peer in pair.both():
        assert peer["path"] == "stun", pair.describe()
        assert {peer["selected_pair"]["local"]["type"], peer["selected_pair"]["remote"]["type"]} & {"srflx", "prflx"}


@pytest.mark.parametrize("nats", [("symmetric", "eim"), ("symmetric", "symmetric")])
def test_symmetric_nat_without_turn_fails_with_turn_needed(lab, tmp_path: Path, stopped,  # type: ignore[no-untyped-def]
                                                           nats: tuple[str, str]) -> None:
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", nats[0]), lab.add_private("b", nats[1])
    started = time.monotonic()
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(stun_flags(coturn), stun_flags(coturn)))
    stopped.append(pair)
    wait_for(lambda: all(peer.get("status") == "failed" for _, peer in pair.both()), CONNECT_TIMEOUT + 20,
             "both sides report the pair failed", diagnostics=pair.describe)
    assert time.monotonic() - started < CONNECT_TIMEOUT + 20
    for _, peer in pair.both():
        assert "TURN relay is needed" in peer["failure_reason"], pair.describe()
        assert peer["connected_after_s"] is None


def test_unreachable_stun_is_named(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    portal = lab.start_portal(tmp_path)
    hosts = lab.add_private("a", "eim"), lab.add_private("b", "eim")
    dead = ["--stun", "stun:203.0.113.2:3999"]  # nothing listens there
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(dead, dead))
    stopped.append(pair)
    wait_for(lambda: all(peer.get("status") == "failed" for _, peer in pair.both()), CONNECT_TIMEOUT + 20,
             "both sides report the pair failed", diagnostics=pair.describe)
    for bot, peer in pair.both():
        assert "TURN relay is needed" in peer["failure_reason"], pair.describe()
        assert "no STUN answer from 203.0.113.2:3999" in peer["failure_reason"], pair.describe()
        notices = [n["text"] for n in (bot.report() or {}).get("notices", [])]
        assert any("no STUN answer" in text for text in notices), notices


def test_symmetric_nats_connect_through_turn(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", "symmetric"), lab.add_private("b", "symmetric")
    flags = [*stun_flags(coturn), *turn_flags(coturn)]
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(flags, flags))
    stopped.append(pair)
    wait_connected(pair)
    for _, peer in pair.both():
        assert peer["path"] == "turn", pair.describe()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_relay_only_connects_relay_to_relay(lab, tmp_path: Path, stopped, transport: str) -> None:  # type: ignore[no-untyped-def]
    """turn: over UDP, turn:…?transport=tcp and turns: (TLS, a certificate the bots trust through
    SSL_CERT_FILE, as a user with a private CA would)."""
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path, tls=transport == "tls")
    hosts = lab.add_private("a", "eim"), lab.add_private("b", "symmetric")
    flags = [*turn_flags(coturn, transport), "--relay-only"]
    env = {"SSL_CERT_FILE": str(coturn.ca_file)} if transport == "tls" else None
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(flags, flags), env=env)
    stopped.append(pair)
    wait_connected(pair)
    for _, peer in pair.both():
        assert peer["path"] == "turn", pair.describe()
        assert peer["selected_pair"]["local"]["type"] == "relay" == peer["selected_pair"]["remote"]["type"]


def test_wrong_turn_password_is_named_and_does_not_hang(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", "eim"), lab.add_private("b", "eim")
    flags = [*turn_flags(coturn, password="not-the-password"), "--relay-only"]
    started = time.monotonic()
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(flags, flags))
    stopped.append(pair)
    wait_for(lambda: all(peer.get("status") == "failed" for _, peer in pair.both()), CONNECT_TIMEOUT,
             "both sides fail fast", diagnostics=pair.describe)
    assert time.monotonic() - started < CONNECT_TIMEOUT
    for bot, peer in pair.both():
        assert "TURN authentication failed" in peer["failure_reason"], pair.describe()
        notices = [n["text"] for n in (bot.report() or {}).get("notices", [])]
        assert any("TURN authentication failed" in text for text in notices), notices


def test_shared_room_turn_reaches_a_peer_without_turn_settings(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", "symmetric"), lab.add_private("b", "symmetric")
    sharer = [*stun_flags(coturn), *turn_flags(coturn), "--share-turn"]
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(sharer, stun_flags(coturn)))
    stopped.append(pair)
    wait_connected(pair)
    assert pair.peer(pair.b)["path"] == "turn", pair.describe()
    notices = [n["text"] for n in (pair.b.report() or {}).get("notices", [])]
    assert any("using the room's TURN relay" in text for text in notices), notices


def test_a_member_sharing_an_sfu_keeps_the_relay_another_shared(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    """The room's settings are one record: b names an SFU while a shares its relay (both at once,
    compare-and-set merges them), and b — without TURN settings of its own — still crosses the
    symmetric NATs through a's relay; both are told of the SFU, which calls do not use yet."""
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", "symmetric"), lab.add_private("b", "symmetric")
    sharer = [*stun_flags(coturn), *turn_flags(coturn), "--share-turn"]
    sfu = [*stun_flags(coturn), "--share-sfu", "ws://127.0.0.1:8188/janus", "--sfu-room", "1234"]
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(sharer, sfu))
    stopped.append(pair)
    wait_connected(pair)
    assert pair.peer(pair.b)["path"] == "turn", pair.describe()
    for bot in (pair.a, pair.b):
        wait_for(lambda bot=bot: any("the room names an SFU: janus @ 127.0.0.1 room 1234" in n["text"]
                                     for n in (bot.report() or {}).get("notices", [])), 20,
                 f"{bot.name} told of the room's SFU", diagnostics=pair.describe)
    notices = [n["text"] for n in (pair.b.report() or {}).get("notices", [])]
    assert any("using the room's TURN relay" in text for text in notices), notices


def connected_stun_pair(lab: Any, tmp_path: Path, stopped: list[Pair]) -> tuple[Pair, tuple[Any, Any]]:
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    hosts = lab.add_private("a", "eim"), lab.add_private("b", "eim")
    pair = start_pair(lab, tmp_path, hosts, portal, flags=(stun_flags(coturn), stun_flags(coturn)))
    stopped.append(pair)
    wait_connected(pair)
    return pair, hosts


def assert_back_without_rejoin(pair: Pair, sessions: dict[str, str], heard: dict[str, float]) -> float:
    """Wait until the pair is connected again by ICE restart with the same sessions and audio flows
    both ways; returns how long the wait took."""
    since = time.monotonic()
    wait_for(lambda: all(peer.get("status") == "connected" and peer.get("restarts", 0) >= 1
                         for _, peer in pair.both()), 20, "the pair back by ICE restart", diagnostics=pair.describe)
    recovered_after = time.monotonic() - since
    assert {bot.name: peer["session_id"] for bot, peer in pair.both()} == sessions  # nobody rejoined
    wait_audio_resumes(pair, heard)
    return recovered_after


def wait_audio_resumes(pair: Pair, heard: dict[str, float]) -> None:
    """Each side hears at least 2 s more than the ``heard`` seconds it had."""
    wait_for(lambda: all(peer.get("audio_seconds", 0) > heard[bot.name] + 2 for bot, peer in pair.both()), 15,
             "audio resumes both ways", diagnostics=pair.describe)


@pytest.mark.parametrize("outage", [10, 30])
def test_nat_uplink_down_recovers_by_ice_restart(lab, tmp_path: Path, stopped, outage: int) -> None:  # type: ignore[no-untyped-def]
    pair, hosts = connected_stun_pair(lab, tmp_path, stopped)
    sessions = {bot.name: peer["session_id"] for bot, peer in pair.both()}

    down_at = time.monotonic()
    lab.link_down(hosts[0])
    wait_for(lambda: all(peer.get("status") == "reconnecting" for _, peer in pair.both()), 9,
             "both sides notice the dead pair", diagnostics=pair.describe)
    time.sleep(max(0.0, down_at + outage - time.monotonic()))
    for _, peer in pair.both():  # still trying, not given up
        assert peer["status"] == "reconnecting", pair.describe()
    heard = {bot.name: peer["audio_seconds"] for bot, peer in pair.both()}
    lab.link_up(hosts[0])
    recovered_after = assert_back_without_rejoin(pair, sessions, heard)
    assert recovered_after < 20, f"recovered {recovered_after:.1f} s after the link came back"


def test_address_change_recovers_by_ice_restart(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    """The host's address goes away and another one appears (a roam or DHCP renewal): the sockets of
    the call and of the portal connection are dead, and the pair comes back from the new address."""
    pair, hosts = connected_stun_pair(lab, tmp_path, stopped)
    sessions = {bot.name: peer["session_id"] for bot, peer in pair.both()}
    heard = {bot.name: peer["audio_seconds"] for bot, peer in pair.both()}
    old_address = hosts[0].address
    new_address = lab.change_address(hosts[0])
    assert_back_without_rejoin(pair, sessions, heard)  # (often within a second of noticing)
    assert new_address != old_address
    for _, peer in pair.both():  # noticed as a dead pair, restarted, and across both NATs again
        assert any(s["state"].startswith("reconnecting") for s in peer["states"]), pair.describe()
        assert peer["path"] == "stun", pair.describe()
    local = pair.peer(pair.a)["selected_pair"]["local"]
    assert local["address"] in (new_address, hosts[0].wan_address), pair.describe()


def test_outage_longer_than_presence_expiry_comes_back_as_a_fresh_pair(lab, tmp_path: Path, stopped) -> None:  # type: ignore[no-untyped-def]
    """Down for 60 s: each side lists the other as gone (a crash looks the same), and once the
    link is back and both announce again the pair starts afresh by itself — nobody rejoins. The
    network comes back in two steps (the web first, UDP only after the first fresh attempt timed
    out), so the fresh pair also has to keep trying instead of failing for good."""
    pair, hosts = connected_stun_pair(lab, tmp_path, stopped)
    sessions = {bot.name: peer["session_id"] for bot, peer in pair.both()}
    lab.link_down(hosts[0])
    wait_for(lambda: all(peer.get("status") == "gone" for _, peer in pair.both()), 75,
             "both sides list the other as gone", diagnostics=pair.describe)
    heard = {bot.name: peer["audio_seconds"] for bot, peer in pair.both()}
    lab.block_udp(hosts[0])
    lab.link_up(hosts[0])
    wait_for(lambda: all(peer.get("status") == "reconnecting" and any("trying again" in s["state"]
                                                                     for s in peer["states"])
                         for _, peer in pair.both()), CONNECT_TIMEOUT + 15,
             "the fresh pair's first attempt timing out into retries", diagnostics=pair.describe)
    lab.unblock_udp(hosts[0])
    wait_for(lambda: all(peer.get("status") == "connected" for _, peer in pair.both()), 30,
             "the pair back as a fresh pair", diagnostics=pair.describe)
    assert {bot.name: peer["session_id"] for bot, peer in pair.both()} == sessions  # the same sessions
    for _, peer in pair.both():
        assert any("back in the room" in s["state"] for s in peer["states"]), pair.describe()
    wait_audio_resumes(pair, heard)
