"""`sdparta doctor` on Nostr relays: the real PyPI nostr-relay process (healthy), a dead port, and a
scripted aiohttp relay on 127.0.0.1 for what the real one never says (blocked:, auth-required:,
NIP-11 limits too small for a call). RTTs are printed, never asserted beyond "measured"."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdparta.commands.doctor import DoctorReport, judge
from sdparta.netchecks import Check, check_relay
from sdparta.netchecks.relay import SEALED_OFFER_CHARS
from support.nostr_relay import FakeRelay, RelayFactory, RelayProcess
from support.procs import PYTHON, free_port

TIMEOUT = 8.0  # generous: two busy cores


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayFactory(tmp_path) as factory:
        yield factory.start()


def answer_events_with(message: str) -> Any:
    """A relay that takes subscriptions and answers every EVENT with ``OK false <message>``."""
    async def handler(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "EVENT":
            await ws.send_json(["OK", msg[1]["id"], False, message])
        else:
            await FakeRelay.accept_all(relay, ws, msg)
    return handler


def echo() -> Any:
    """A minimal working relay: OK true, and every event sent back on each subscription of its socket
    (the doctor's filter is checked again by the client, which drops what does not match)."""
    subs: dict[int, list[str]] = {}

    async def handler(relay: FakeRelay, ws: Any, msg: list[Any]) -> None:
        if msg[0] == "REQ":
            subs.setdefault(id(ws), []).append(msg[1])
            await ws.send_json(["EOSE", msg[1]])
        elif msg[0] == "EVENT":
            await ws.send_json(["OK", msg[1]["id"], True, ""])
            for sub_id in subs.get(id(ws), []):
                await ws.send_json(["EVENT", sub_id, msg[1]])
    return handler


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeRelay]]:
    started: list[FakeRelay] = []
    yield started
    for fake in started:
        await fake.stop()


async def fake_relay(fakes: list[FakeRelay], handler: Any, nip11: Any = ...) -> FakeRelay:
    fake = await FakeRelay(handler, nip11=nip11).start()
    fakes.append(fake)
    return fake


# ---------------------------------------------------------------------------- the check itself
async def test_a_healthy_relay_is_ok_with_its_round_trip_and_limits(relay: RelayProcess) -> None:
    check = await check_relay(relay.url, timeout=TIMEOUT)
    assert check.ok, check
    assert check.facts["publish"] == "accepted" and check.facts["read_back"] is True
    assert check.latency_ms is not None and check.latency_ms > 0 and check.facts["rtt_ms"] > 0
    assert "read back in" in check.detail and "sdparta test relay" in check.detail
    assert check.facts["relay_name"] == "sdparta test relay" and check.facts["version"] == "1.14"
    assert check.facts["limits"]["advertised"] is False  # nostr-relay's NIP-11 has no limitation
    assert check.facts["would_refuse"] == []
    # the probe really went through the relay: stored, addressable, opaque, expiring
    stored = [e for e in relay.stored_events() if e["kind"] == 30078]
    assert len(stored) == 1
    tags = {t[0]: t[1] for t in stored[0]["tags"]}
    assert set(tags) == {"d", "x", "expiration"} and len(tags["x"]) == 32 and len(stored[0]["content"]) == 16


async def test_a_dead_port_is_unreachable_with_the_fix() -> None:
    url = f"ws://127.0.0.1:{free_port()}/"
    check = await check_relay(url, timeout=TIMEOUT)
    assert check.problem == "unreachable", check
    assert "connect failed" in check.detail
    assert "that the relay is running" in check.facts["fix"] and "--relay wss://" in check.facts["fix"]
    assert "relays = [...]" in check.facts["fix"]


async def test_a_bad_url_is_named() -> None:
    check = await check_relay("http://127.0.0.1:1/", timeout=TIMEOUT)
    assert check.problem == "bad-url" and "ws://" in check.detail


@pytest.mark.parametrize("reason", ["blocked: kind 30078 is not allowed here", "auth-required: we only serve members",
                                    "pow: difficulty 28 required", "restricted: paying users only"])
async def test_a_relay_refusing_our_events_is_named_with_its_reason(fakes: list[FakeRelay], reason: str) -> None:
    fake = await fake_relay(fakes, answer_events_with(reason))
    check = await check_relay(fake.url, timeout=TIMEOUT)
    assert check.problem == "refused", check
    assert reason in check.detail and check.facts["reason"] == reason
    assert "use another relay" in check.facts["fix"] and fake.url in check.facts["fix"]
    assert fake.messages("EVENT"), "the probe was published"


async def test_rate_limited_is_its_own_finding(fakes: list[FakeRelay]) -> None:
    fake = await fake_relay(fakes, answer_events_with("rate-limited: slow down"))
    check = await check_relay(fake.url, timeout=TIMEOUT)
    assert check.problem == "rate-limited" and "slow down" in check.detail, check
    assert "wait a minute" in check.facts["fix"]


async def test_nip11_auth_required_refuses_before_publishing(fakes: list[FakeRelay]) -> None:
    fake = await fake_relay(fakes, echo(), nip11={"name": "members only", "limitation": {"auth_required": True}})
    check = await check_relay(fake.url, timeout=TIMEOUT)
    assert check.problem == "refused" and "auth-required" in check.detail, check
    assert check.facts["limits"]["auth_required"] is True
    assert any("auth-required" in r for r in check.facts["would_refuse"])
    assert not fake.messages("EVENT"), "nothing is sent to a relay that says it needs auth"


async def test_a_relay_too_small_for_a_call_says_the_messages_will_not_fit(fakes: list[FakeRelay]) -> None:
    fake = await fake_relay(fakes, echo(), nip11={"name": "tiny", "software": "git+https://example.invalid/tiny.git",
                                                "limitation": {"max_content_length": 1000, "max_subscriptions": 5,
                                                               "restricted_writes": True}})
    check = await check_relay(fake.url, timeout=TIMEOUT)
    assert check.problem == "too-small", check  # the probe itself fits and comes back
    assert check.facts["read_back"] is True and check.latency_ms is not None and check.latency_ms > 0
    assert "a call's messages will not fit" in check.detail
    assert f"~{SEALED_OFFER_CHARS // 1024} KB" in check.detail and "max_content_length 1000" in check.detail
    assert check.facts["limits"]["max_content_length"] == 1000 and check.facts["limits"]["max_subscriptions"] == 5
    assert "'tiny' (tiny.git)" in check.detail and "restricted_writes" in check.detail
    assert any(r.startswith("restricted_writes") for r in check.facts["would_refuse"])


async def test_a_relay_that_accepts_but_never_serves_the_probe(fakes: list[FakeRelay]) -> None:
    fake = await fake_relay(fakes, FakeRelay.accept_all)  # OK true, EOSE, never an EVENT back
    check = await check_relay(fake.url, timeout=2.0)
    assert check.problem == "no-read-back" and "did not send it back" in check.detail, check


# ---------------------------------------------------------------------------- the verdict
def _relay_check(url: str, problem: str | None, detail: str = "detail") -> Check:
    return Check("relay", url, problem, detail, facts={"fix": None if problem is None else f"fix for {url}"})


def _judged(*checks: Check) -> DoctorReport:
    report = DoctorReport([*checks, Check("gathering", "", None, "1 candidates (host)", 1.0, {"types": ["host"]})])
    judge(report, relay_only=False)
    return report


def test_verdict_on_relays_only() -> None:
    ok = _judged(_relay_check("ws://a/", None))
    assert ok.verdict == "pass", ok  # no portal configured is not fatal with relays
    refused = _judged(_relay_check("ws://a/", "refused", "refuses our events (blocked: no)"),
                      _relay_check("ws://b/", "rate-limited"))
    assert refused.verdict == "fail" and refused.summary.startswith("every relay refuses us"), refused
    assert "blocked: no" in refused.summary and "--relay wss://" in refused.fix
    mixed = _judged(_relay_check("ws://a/", "unreachable"), _relay_check("ws://b/", "refused"))
    assert mixed.verdict == "fail" and "no relay works" in mixed.summary and mixed.fix == "fix for ws://a/"
    small = _judged(_relay_check("ws://a/", "too-small"))
    assert small.verdict == "fail" and "can carry a call's offer" in small.summary
    nothing = _judged()
    assert nothing.verdict == "fail" and "no portal and no relay configured" in nothing.summary


def test_verdict_with_portals_and_relays() -> None:
    dead_portal = Check("portal", "http://p", "unreachable", "down")
    both_down = _judged(dead_portal, _relay_check("ws://a/", "unreachable"))
    assert both_down.verdict == "fail" and "no portal and no relay answers" in both_down.summary, both_down
    one_up = _judged(dead_portal, _relay_check("ws://a/", None), _relay_check("ws://b/", "refused", "refuses us"))
    assert one_up.verdict == "pass", one_up
    assert "relay ws://b/: refuses us" in one_up.summary and "fix for ws://b/" in one_up.fix


# ---------------------------------------------------------------------------- end to end
def doctor(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SDPARTA_CONFIG": str(tmp_path / "no-config.toml")}  # no user config file
    return subprocess.run([PYTHON, "-m", "sdparta", "doctor", "--timeout", str(TIMEOUT), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_doctor_relay_json_end_to_end(relay: RelayProcess, tmp_path: Path) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/"
    result = doctor(tmp_path, "--relay", relay.url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "pass"
    relays = [c for c in report["checks"] if c["kind"] == "relay"]
    assert [c["url"] for c in relays] == [relay.url] and relays[0]["ok"] and relays[0]["rtt_ms"] > 0
    assert not [c for c in report["checks"] if c["kind"] == "portal"], "given only relays, no default portal"

    result = doctor(tmp_path, "--relay", dead, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "fail" and "no relay works" in report["summary"]
    assert "that the relay is running" in report["fix"]

    result = doctor(tmp_path, "--relay", relay.url, "--relay", dead)  # text: one dead relay is not fatal
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok   relay     {relay.url}  probe published and read back in" in result.stdout
    assert f"FAIL relay     {dead}" in result.stdout and "verdict: PASS" in result.stdout
    assert f"remove {dead} from `relays = [...]`" in result.stdout


def test_a_bad_relay_url_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = doctor(tmp_path, "--relay", "http://127.0.0.1:1/")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("sdparta doctor: --relay: not a relay URL"), result.stderr


def test_nothing_configured_checks_the_public_defaults_a_call_would_use(
        relay: RelayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No portal and no relay: a call would use the built-in public relays and STUN, so doctor checks
    those (patched here to servers on this machine: tests never reach public hosts)."""
    from sdparta import cli
    from sdparta.commands.doctor import PUBLIC_RELAY_FIX
    from sdparta.engine import defaults

    dead_relay, dead_stun = f"ws://127.0.0.1:{free_port()}/", f"stun:127.0.0.1:{free_port()}"
    monkeypatch.setenv("SDPARTA_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setattr(defaults, "PUBLIC_RELAYS", (relay.url, dead_relay))
    monkeypatch.setattr(defaults, "PUBLIC_STUN", (dead_stun,))
    code = cli.main(["doctor", "--json", "--timeout", "3"])
    report = json.loads(capsys.readouterr().out)
    assert report["public_defaults"] is True
    checks = {(c["kind"], c["url"]): c for c in report["checks"]}
    assert checks["relay", relay.url]["ok"] and checks["relay", dead_relay]["problem"] == "unreachable"
    assert checks["relay", dead_relay]["fix"] == PUBLIC_RELAY_FIX  # nothing of the user's to remove
    assert ("stun", dead_stun) in checks and not [c for c in report["checks"] if c["kind"] == "portal"]
    assert code == 1 and "no STUN server answers" in report["summary"], report  # the dead public STUN
