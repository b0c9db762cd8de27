"""`sdparta doctor` inside each private namespace of the NAT lab gives the matching verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.procs import PYTHON

pytestmark = pytest.mark.netlab


def doctor_in(host: Any, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = subprocess.run([*host.exec_prefix(env), PYTHON, "-m", "sdparta", "doctor", "--json",
                             "--timeout", "3", *args], capture_output=True, text=True, timeout=90)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def nat_check(report: dict[str, Any]) -> dict[str, Any]:
    return next(check for check in report["checks"] if check["kind"] == "nat")


def test_doctor_verdicts_match_the_nat(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path)
    eim, symmetric = lab.add_private("a", "eim"), lab.add_private("b", "symmetric")
    stun = ["--portal", portal, "--stun", coturn.stun_url()]
    turn = ["--turn", coturn.url(), "--turn-user", coturn.user, "--turn-password", coturn.password]

    code, report = doctor_in(eim, *stun)
    assert code == 0, report
    assert nat_check(report)["behaviour"] == "endpoint-independent", report
    assert "directly or via STUN" in report["summary"]
    assert set(nat_check(report)["mappings"].values()) == {next(iter(nat_check(report)["mappings"].values()))}

    code, report = doctor_in(symmetric, *stun)
    assert code == 1, report
    assert nat_check(report)["behaviour"] == "symmetric", report
    assert "TURN relay is needed" in report["summary"] and "--turn" in report["fix"]

    code, report = doctor_in(symmetric, *stun, *turn)
    assert code == 0, report
    assert "through the TURN relay" in report["summary"]
    gathering = next(check for check in report["checks"] if check["kind"] == "gathering")
    assert "relay" in gathering["types"]

    code, report = doctor_in(eim, *stun, *turn[:-1], "wrong-password")
    assert code == 1 and "TURN authentication failed" in report["summary"], report


def test_doctor_checks_turn_over_tls(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """turns: with a certificate this machine does not trust is named as a TLS failure; trusted (the
    lab's CA in SSL_CERT_FILE), the allocation over TLS succeeds and relay-only calls can work."""
    portal, coturn = lab.start_portal(tmp_path), lab.start_coturn(tmp_path, tls=True)
    host = lab.add_private("a", "symmetric")
    args = ["--portal", portal, "--turn", coturn.url("tls"), "--turn-user", coturn.user,
            "--turn-password", coturn.password, "--relay-only"]

    code, report = doctor_in(host, *args)
    turn = next(check for check in report["checks"] if check["kind"] == "turn")
    assert code == 1 and turn["problem"] == "tls-failed", report
    assert "certificate" in turn["detail"].lower(), turn

    code, report = doctor_in(host, *args, env={"SSL_CERT_FILE": str(coturn.ca_file)})
    turn = next(check for check in report["checks"] if check["kind"] == "turn")
    assert code == 0, report
    assert turn["ok"] and turn["transport"] == "tls", turn
