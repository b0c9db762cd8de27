"""`sdparta doctor` against real servers on loopback: a real portal process and Debian's coturn."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.coturn import Coturn, coturn_missing, start_coturn
from support.procs import PYTHON, PortalProcess, free_port


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    if (reason := coturn_missing()) is not None:
        pytest.skip(reason)
    server = start_coturn(tmp_path / "coturn", port=free_port())
    try:
        yield server
    finally:
        server.stop()


def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run([PYTHON, "-m", "sdparta", "doctor", "--json", "--timeout", "2", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def by_kind(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [check for check in report["checks"] if check["kind"] == kind]


def turn_args(coturn: Coturn, password: str | None = None, transport: str = "udp") -> list[str]:
    return ["--turn", coturn.url(transport), "--turn-user", coturn.user, "--turn-password", password or coturn.password]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_everything_reachable_passes(portal: PortalProcess, coturn: Coturn, transport: str) -> None:
    code, report = doctor("--portal", portal.url, "--stun", coturn.stun_url(), *turn_args(coturn, transport=transport))
    assert code == 0 and report["verdict"] == "pass", report
    assert by_kind(report, "portal")[0]["push"] is True
    assert by_kind(report, "stun")[0]["mapped"].startswith("127.0.0.1:")
    turn = by_kind(report, "turn")[0]
    assert turn["ok"] and turn["relayed"].startswith("127.0.0.1:") and turn["transport"] == transport
    assert "relay" in by_kind(report, "gathering")[0]["types"]


def test_wrong_turn_password_fails_with_the_cause(portal: PortalProcess, coturn: Coturn) -> None:
    code, report = doctor("--portal", portal.url, "--stun", coturn.stun_url(), *turn_args(coturn, "wrong"))
    assert code == 1
    assert "TURN authentication failed" in report["summary"]
    assert "--turn-password" in report["fix"]
    assert by_kind(report, "turn")[0]["problem"] == "auth-failed"


def test_relay_only_without_a_working_relay_fails(portal: PortalProcess, coturn: Coturn) -> None:
    code, report = doctor("--portal", portal.url, "--relay-only")
    assert code == 1 and "--relay-only needs a working TURN relay" in report["summary"], report
    code, report = doctor("--portal", portal.url, "--relay-only", *turn_args(coturn))
    assert code == 0, report
    assert by_kind(report, "gathering")[0]["types"] == ["relay"]


def test_unreachable_servers_are_named(coturn: Coturn, tmp_path: Path) -> None:
    dead = free_port()
    code, report = doctor("--portal", f"http://127.0.0.1:{dead}", "--stun", coturn.stun_url())
    assert code == 1 and "no portal answers" in report["summary"]
    assert by_kind(report, "portal")[0]["problem"] == "unreachable"
    code, report = doctor("--portal", f"http://127.0.0.1:{dead}", "--turn", f"turn:127.0.0.1:{dead}",
                          "--turn-user", "u", "--turn-password", "p", "--stun", f"stun:127.0.0.1:{dead}")
    assert {check["problem"] for check in report["checks"] if check["kind"] in ("turn", "stun")} == {"unreachable"}


def test_plain_portal_without_push_and_text_output(tmp_path: Path) -> None:
    from support.procs import start_portal

    plain = start_portal(tmp_path / "plain.sqlite3", subscription=False)
    try:
        result = subprocess.run([PYTHON, "-m", "sdparta", "doctor", "--portal", plain.url], capture_output=True,
                                text=True, timeout=60)
    finally:
        plain.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clients will poll" in result.stdout
    assert "verdict: PASS — calls can connect on this local network only" in result.stdout


# ---------------------------------------------------------------------------- a STUN server that is dead
@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that takes STUN requests and never answers (a dead server, no ICMP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield sink.getsockname()[1]


def _host_addresses() -> list[str]:
    from aioice.ice import get_host_addresses

    return get_host_addresses(use_ipv4=True, use_ipv6=True)


needs_interface = pytest.mark.skipif(not _host_addresses(), reason="no non-loopback interface: no host candidates")


@needs_interface
def test_gathering_keeps_host_candidates_when_stun_does_not_answer_in_time(silent_udp: int) -> None:
    """aioice waits 5 s for a STUN server and hands out nothing before: cut short, it gave 0 candidates."""
    from sdparta.netchecks import gather_candidates

    check = asyncio.run(gather_candidates(f"stun:127.0.0.1:{silent_udp}", None, timeout=1.0))
    assert check.ok, check
    assert check.facts["types"] == ["host"] and check.facts["complete"] is False
    assert f"stun:127.0.0.1:{silent_udp} did not answer within 1 s" in check.detail


@needs_interface
def test_a_dead_stun_server_is_blamed_not_the_interfaces(portal: PortalProcess, silent_udp: int) -> None:
    stun = f"stun:127.0.0.1:{silent_udp}"
    code, report = doctor("--portal", portal.url, "--stun", stun)  # --timeout 2, as in the issue
    assert code == 1
    gathering = by_kind(report, "gathering")[0]
    assert gathering["ok"] and "host" in gathering["types"], gathering
    (stun_check,) = by_kind(report, "stun")
    assert stun_check["problem"] == "unreachable" and f"127.0.0.1:{silent_udp}" in stun_check["detail"]
    assert "no STUN server answers" in report["summary"] and "--stun" in report["fix"]
    assert "interface" not in report["summary"] + report["fix"]


def test_no_candidates_at_all_blames_the_interfaces_and_relay_only_the_relay() -> None:
    from sdparta.commands.doctor import DoctorReport, judge
    from sdparta.netchecks import Check

    portal_ok = Check("portal", "http://127.0.0.1:1", None, "ok")
    nothing = Check("gathering", "", "no-candidates", "no ICE candidates gathered")
    report = DoctorReport([portal_ok, nothing])
    judge(report, relay_only=False)
    assert "no usable network interface" in report.summary and "network interface is up" in report.fix
    relay = Check("turn", "turn:127.0.0.1:3478", None, "relay allocated")
    report = DoctorReport([portal_ok, relay, Check("gathering", "", "no-candidates", "no relay candidate gathered")])
    judge(report, relay_only=True)
    assert "no relay candidate" in report.summary and "interface" not in report.summary + report.fix
