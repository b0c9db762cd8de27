"""The SFU rule (engine/sfu_policy.py) and how the UI and the bot report say where media goes."""

from __future__ import annotations

from sdparta.commands.bot import build_report
from sdparta.engine.sfu_policy import RETRY_FIRST_S, SfuPolicy
from sdparta.engine.state import CallSnapshot, PeerSnapshot, PeerStatus, SfuSnapshot, StateChange
from sdparta.ui.participants import participants_text
from sdparta.ui.status_bar import media_route, status_text


def test_the_room_moves_up_at_the_threshold_and_down_only_after_staying_small_for_the_hold() -> None:
    policy = SfuPolicy(at=4, hold_s=30)
    assert not policy.want_sfu(0, 3, on_sfu=False)
    assert policy.want_sfu(0, 4, on_sfu=False)
    assert policy.want_sfu(1, 3, on_sfu=True)  # small since t=1
    assert policy.want_sfu(20, 2, on_sfu=True)
    assert policy.want_sfu(25, 4, on_sfu=True)  # back to 4: the hold starts again
    assert policy.want_sfu(26, 3, on_sfu=True) and policy.want_sfu(55, 3, on_sfu=True)
    assert not policy.want_sfu(56.5, 3, on_sfu=True)  # 30.5 s small: back to the mesh


def test_never_with_zero_and_a_failure_waits_longer_each_time() -> None:
    assert not SfuPolicy(at=0, hold_s=30).want_sfu(0, 50, on_sfu=False)
    policy = SfuPolicy(at=2, hold_s=5)
    assert policy.failed(100) == RETRY_FIRST_S
    assert not policy.want_sfu(100 + RETRY_FIRST_S - 1, 5, on_sfu=False)
    assert policy.want_sfu(100 + RETRY_FIRST_S, 5, on_sfu=False)
    assert policy.failed(200) == 2 * RETRY_FIRST_S
    policy.succeeded()
    assert policy.failed(300) == RETRY_FIRST_S


def _snap(state: str | None, via: str = "mesh") -> CallSnapshot:
    peer = PeerSnapshot(session_id="a" * 16, name="bob", fingerprint="abcd:abcd:abcd:abcd", public_key="00",
                        we_offer=True, status=PeerStatus.CONNECTED, via=via)
    sfu = None if state is None else SfuSnapshot(label="janus @ sfu.example", plugin="videoroom", state=state,
                                                 events=(StateChange(1.0, "sfu", "on the SFU janus @ sfu.example"),))
    return CallSnapshot(room="r", name="me", fingerprint="ffff:ffff:ffff:ffff", session_id="b" * 16,
                        peers=(peer,), sfu=sfu, room_sfu="janus @ sfu.example room 7" if sfu else None,
                        started_at=1000.0)


def test_status_bar_and_participant_list_say_via_sfu_or_mesh_only_where_the_room_names_an_sfu() -> None:
    assert media_route(_snap(None)) is None
    assert "mesh" not in status_text(_snap(None), 200).plain
    assert media_route(_snap("mesh")) == "mesh"
    assert media_route(_snap("failed")) == "mesh (SFU failed)"
    on = _snap("sfu", via="sfu")
    bar = status_text(on, 200).plain
    assert "via SFU (janus @ sfu.example)" in bar and "decrypted" in bar
    assert "via SFU (janus @ sfu.example)" in participants_text(on.peers, None, sfu_label="janus @ sfu.example").plain
    assert " mesh" in participants_text(_snap("sfu").peers, None, sfu_label="janus @ sfu.example").plain
    assert "mesh" not in participants_text(_snap(None).peers, None).plain
    assert "?" in status_text(on, 40).plain  # the hints stay on a narrow terminal


def test_the_bot_report_has_each_peers_via_and_the_sfu_block() -> None:
    report = build_report(_snap("sfu", via="sfu"))
    assert report["peers"][0]["via"] == "sfu"
    assert report["sfu"]["named"] == "janus @ sfu.example room 7" and report["sfu"]["state"] == "sfu"
    assert report["sfu"]["events"] == [{"t": 1001.0, "text": "on the SFU janus @ sfu.example"}]
    assert build_report(_snap(None))["sfu"] == {"named": None, "state": "mesh", "events": []}
