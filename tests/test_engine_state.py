"""Statuses are types: StrEnums that still read, compare and serialise as the old strings."""

from __future__ import annotations

import json

from sdparta.engine.state import FINISHED, LIVE, NEGOTIATING, CallSnapshot, CallStatus, PeerStatus


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
