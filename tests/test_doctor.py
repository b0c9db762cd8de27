"""`sdparta doctor` against real servers on loopback: a real portal process and Debian's coturn."""

from __future__ import annotations

import json
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
