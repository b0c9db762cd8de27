"""Statuses are types: StrEnums that still read, compare and serialise as the old strings."""

from __future__ import annotations

import json
import time

import pytest

from sdparta.engine import call as call_module
from sdparta.engine.call import Call, CallConfig
from sdparta.engine.state import FINISHED, LIVE, NEGOTIATING, CallSnapshot, CallStatus, PeerStatus
from sdparta.room.keys import RoomKeys
from sdparta.store.memory import MemoryStore


def test_statuses_are_the_strings_snapshots_and_reports_always_carried() -> None:
    assert PeerStatus.CONNECTED == "connected" and f"{PeerStatus.GONE}" == "gone"
    assert json.dumps({"s": PeerStatus.RECONNECTING, "c": CallStatus.JOINED}) == '{"s": "reconnecting", "c": "joined"}'
    assert [s.value for s in PeerStatus] == ["discovered", "connecting", "connected", "reconnecting", "failed",
                                             "left", "gone"]
    assert CallSnapshot(room="r", name="n", fingerprint="f", session_id="s").status == "starting"


def test_live_and_finished_split_the_statuses() -> None:
    assert {"failed", "left", "gone"} == FINISHED
    assert set(PeerStatus) == LIVE | FINISHED and not LIVE & FINISHED
    assert {"discovered", "connecting", "reconnecting"} == NEGOTIATING and NEGOTIATING < LIVE
    assert PeerStatus("left").finished and PeerStatus.CONNECTED.live


def _wait(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_snapshots_say_who_we_send_since_when_we_are_alone_and_whether_the_portal_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the UI's lobby and status bar read: the audio source, that a password is set (never
    the password), time alone after joining, and portal reachability — false while joining fails,
    false again when a probe made while alone gets no answer, true once it answers."""
    monkeypatch.setattr(call_module, "PORTAL_PROBE_INTERVAL", 0.2)
    store = MemoryStore()
    store.available = False  # the portal is down before we even join
    call = Call(CallConfig(room="lonely", portals=["http://127.0.0.1:9"], password="secret", video="none",
                           audio="tone:440", store=store, room_keys=RoomKeys.derive("lonely", "secret")))
    first = call.snapshot()
    assert first.mic_source == "tone:440" and first.password_set and first.portal_reachable is None
    assert "secret" not in repr(first)
    call.start()
    try:
        _wait(lambda: call.snapshot().status == CallStatus.ERROR, "the failing join")
        assert call.snapshot().portal_reachable is False and call.snapshot().alone_since is None
        store.available = True
        _wait(lambda: call.snapshot().status == CallStatus.JOINED and call.snapshot().alone_since is not None,
              "joined, alone")
        snap = call.snapshot()
        assert snap.portal_reachable is True and snap.alone_since <= time.time()  # type: ignore[operator]
        store.available = False
        _wait(lambda: call.snapshot().portal_reachable is False, "the probe noticing the outage")
        store.available = True
        _wait(lambda: call.snapshot().portal_reachable is True, "the probe noticing the portal back")
    finally:
        call.stop()
