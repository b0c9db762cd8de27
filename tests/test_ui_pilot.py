"""The app driven by Textual's Pilot: keys, notices, tiles and quitting against a frozen call (fast,
deterministic), then against a real portal process and real bot processes (integration)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from textual.widgets import Input, RichLog, Static

from sdparta.engine.state import CallSnapshot, ChatMessage, Notice
from sdparta.ui.app import SSH_TILE_CELLS, SdpartaApp
from sdparta.ui.screens import HelpScreen
from sdparta.ui.video import FpsGovernor
from support.frozen_call import FrozenCall
from support.procs import BotProcess, peers_by_name, start_bot


async def until(pilot, predicate: Callable[[], bool], timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def heard_level(bot: BotProcess, name: str) -> float:
    """The level at which ``bot`` currently hears ``name`` (NaN before it knows ``name``)."""
    peer = peers_by_name(bot.report()).get(name)
    return float("nan") if peer is None else float(peer["audio_level"])


@pytest.mark.integration
async def test_app_in_a_real_room(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
    from sdparta.engine.call import Call, CallConfig

    room = "pilot-room"
    bots = [start_bot(tmp_path, room, [portal.url], f"bot{i}", tone=500 + 200 * i, chat=f"hi from bot{i}",
                      record=False) for i in (1, 2)]
    call = Call(CallConfig(room=room, portals=[portal.url], name="tester", video="pattern", audio="tone:300"))
    app = SdpartaApp(call, video_mode="256", fps=10, dump_dir=tmp_path)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            participants = app.query_one("#participants", Static)
            await until(pilot, lambda: sum(p.status == "connected" for p in app.snapshot_state.peers) == 2, 60,
                        "both bots connected in the app")
            text = str(participants.render())
            assert "bot1" in text and "bot2" in text and text.count("connected") >= 2

            # a bot's chat line appears in the log
            log = app.query_one("#chat-log", RichLog)
            await until(pilot, lambda: any("hi from bot1" in line.text for line in log.lines), 30, "bot chat in log")

            # video cells are drawn for the bots
            await until(pilot, lambda: all(t.video.cells is not None for t in app._tiles.values()), 30,
                        "video tiles rendered")

            # a typed chat line reaches the bots over the data channel
            await pilot.press("c")
            assert isinstance(app.focused, Input)
            await pilot.press(*"hello bots", "enter")
            await until(pilot, lambda: all("hello bots" in {c["text"] for c in (b.report() or {}).get(
                "chat_received", [])} for b in bots), 30, "chat reached both bots")

            # mute: what the bots hear from us drops to silence, and comes back on unmute
            await until(pilot, lambda: all(heard_level(b, "tester") > 0.05 for b in bots), 30,
                        "bots hear our tone")
            await pilot.press("escape", "m")
            assert app.muted
            await until(pilot, lambda: app.snapshot_state.mic == "muted", 10, "engine reports the mic muted")
            await until(pilot, lambda: all(heard_level(b, "tester") < 0.005 for b in bots), 30,
                        "bots hear silence after mute")
            await pilot.press("m")
            await until(pilot, lambda: all(heard_level(b, "tester") > 0.05 for b in bots), 30,
                        "bots hear us again after unmute")

            # ICE panel and dump
            await pilot.press("i")
            assert "candidate pairs" in str(app.query_one("#ice-text", Static).render())
            await pilot.press("d")
            await until(pilot, lambda: any(tmp_path.glob("*.json")), 10, "timeline dump written")

            await pilot.press("ctrl+q")
            await until(pilot, lambda: not call.running, 20, "engine stopped")
        assert not any(t.name == "sdparta-engine" for t in threading.enumerate())
    finally:
        call.stop()
        for bot in bots:
            bot.stop()


@pytest.mark.integration
async def test_unreachable_portal_is_a_notification_not_a_freeze(tmp_path: Path) -> None:
    from sdparta.engine.call import Call, CallConfig
    from support.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    call = Call(CallConfig(room="nowhere", portals=[dead], name="tester", video="none", audio="none"))
    app = SdpartaApp(call, fps=5, dump_dir=tmp_path)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: any("unreachable" in n.message for n in app._notifications), 20,
                        "a notification about the unreachable portal")
            assert "error" in str(app.query_one("#status", Static).render())
            await until(pilot, lambda: f"portal {dead} not answering" in str(app.query_one("#lobby", Static).render()),
                        20, "the lobby naming the portal instead of waiting")
            assert "waiting" not in str(app.query_one("#participants", Static).render())
            await pilot.press("question_mark")  # the UI still answers keys while the engine retries
            await pilot.press("escape", "ctrl+q")
            await until(pilot, lambda: not call.running, 20, "engine stopped")
    finally:
        call.stop()


# ------------------------------------------------------------------ frozen call: no network, fast
def frozen_app(call: FrozenCall | None = None, **kwargs: object) -> SdpartaApp:
    options: dict[str, object] = {"video_mode": "truecolor", "fps": 10, "small_tiles": False,
                                  "local_time": time.gmtime, **kwargs}
    return SdpartaApp(call or FrozenCall(), **options)  # type: ignore[arg-type]


def publish_from_engine_thread(call: FrozenCall, snapshot: CallSnapshot) -> None:
    """Listeners run on the engine thread: do the same here."""
    thread = threading.Thread(target=call.publish, args=(snapshot,))
    thread.start()
    thread.join()


async def test_keys_move_focus_and_reach_the_call(tmp_path: Path) -> None:
    call = FrozenCall()
    app = frozen_app(call, dump_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.focused_sid is not None, 5, "first participant focused")
        order = [p.session_id for p in app._roster]
        assert app.focused is None, "no widget takes the keys before the user asks for the chat"
        for key, expected in (("tab", 1), ("n", 2), ("shift+tab", 1), ("p", 0), ("p", len(order) - 1)):
            await pilot.press(key)
            assert app.focused_sid == order[expected], key
        await pilot.press("m", "m", "v")
        assert call.commands == [("mute", True), ("mute", False), ("camera", False)]

        await pilot.press("i")
        await until(pilot, lambda: app.query_one("#ice").display, 5, "the ICE panel shown")
        head = str(app.query_one("#ice-head", Static).render())
        ice = str(app.query_one("#ice-text", Static).render())
        focused = app.focused_peer()
        assert focused is not None and focused.name in head and "candidate pairs" in ice
        assert all(label in ice for label in ("signaling", "gathering", "ice", "connection"))
        await pilot.press("i")
        await until(pilot, lambda: not app.query_one("#ice").display, 5, "the ICE panel hidden")


async def test_chat_input_takes_every_printable_key() -> None:
    call = FrozenCall()
    app = frozen_app(call)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"mvnpicd?/", "space", *"ok", "enter")
        assert call.commands == [("chat", "mvnpicd?/ ok")], "letters that are shortcuts went into the text"
        assert not app.query_one("#ice").display and len(app.screen_stack) == 1
        await pilot.press("escape")
        assert app.focused is None
        await pilot.press("m")
        assert call.commands[-1] == ("mute", True)


async def test_help_lists_keys_and_ctrl_q_quits_from_it() -> None:
    call = FrozenCall()
    app = frozen_app(call)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=100, file=io.StringIO(), record=True)
        console.print(app.screen.query_one("#help", Static).content)
        help_text = console.export_text()
        for key in ("m", "v", "tab", "shift+tab", "i", "c, /", "d", "?", "ctrl+q", "ctrl+c", "PgDn"):
            assert key in help_text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark", "ctrl+q")
        await until(pilot, lambda: call.stopped, 5, "the call stopped")
    assert app.return_code == 0


async def test_notices_and_errors_are_shown_once_each() -> None:
    call = FrozenCall()
    app = frozen_app(call)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        def messages() -> list[str]:
            return [n.message for n in app._notifications]

        await until(pilot, lambda: len(messages()) == 1, 5, "the initial notice")
        first = call.snapshot()
        publish_from_engine_thread(call, replace(first, status="joined"))  # same notices again
        hostile = Notice(2, "error", "portal [bold]x[/] unreachable \x1b[2J")
        publish_from_engine_thread(call, replace(first, notices=(*first.notices, hostile), error="disk full"))
        await until(pilot, lambda: len(messages()) == 3, 5, "the new notice and the error")
        publish_from_engine_thread(call, replace(call.snapshot(), peers=first.peers[:1]))  # nothing new
        await pilot.pause(0.2)
        assert messages()[1:] == ["portal [bold]x[/] unreachable [2J", "disk full"], "markup kept literal"
        # the engine trims old notices at the front; the UI still sees only what is new
        trimmed = replace(call.snapshot(), notices=(hostile, Notice(3, "warning", "no camera")), error=None)
        publish_from_engine_thread(call, trimmed)
        await until(pilot, lambda: len(messages()) == 4, 5, "the notice after trimming")
        assert messages()[-1] == "no camera"


async def test_remote_strings_cannot_inject_escape_sequences(tmp_path: Path) -> None:
    call = FrozenCall()
    evil = replace(call.snapshot().peers[0], name="../../evil\x1b]0;owned\x07")
    chat = ChatMessage(1.0, "x\x1b[31m", "fp", "hi\x1b[2J")
    call = FrozenCall(replace(call.snapshot(), peers=(evil,), chat=(chat,)))
    app = frozen_app(call, dump_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.focused_sid is not None, 5, "participant shown")
        assert "\x1b" not in str(app.query_one("#participants", Static).render())
        assert all("\x1b" not in line.text for line in app.query_one("#chat-log", RichLog).lines)
        await pilot.press("d")
        dumps = list(tmp_path.glob("*.json"))
        assert len(dumps) == 1 and dumps[0].parent == tmp_path, "a remote name must not choose the path"
        document = json.loads(dumps[0].read_text())
        assert document["peer"]["session_id"] == evil.session_id
        assert document["peer"]["timeline"][0] == {"t": 0.0, "kind": "peer", "state": "discovered"}
        assert "stats_history" in document["peer"] and document["room"] == "snapshot-room"
        assert any(str(dumps[0]) in n.message for n in app._notifications), "the path is notified"


async def test_tiles_redraw_only_changed_rows_and_follow_the_terminal_size() -> None:
    call = FrozenCall()
    app = frozen_app(call)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app._tiles) == 3, 5, "tiles for the three live participants")
        tiles = [t for t in app._tiles.values() if t.video.display]
        assert len(tiles) == 2, "the audio-only participant shows an identicon, not video"
        await until(pilot, lambda: all(t.video.cells is not None for t in tiles), 5, "frames drawn")
        video = tiles[0].video
        cells = video.cells
        assert cells is not None
        frame_w, frame_h = 160, 120
        assert abs(cells.cols / (cells.rows * 2) - frame_w / frame_h) < 0.15, "aspect ratio kept"
        refreshed = video.rows_refreshed
        rgb = call.latest_frame(tiles[0].session_id)[1].copy()  # type: ignore[index]
        rgb[: frame_h // cells.rows // 2] = 128  # only the first cell row changes
        assert video.show_frame(999, rgb) == [0]
        assert video.rows_refreshed == refreshed + 1
        assert video.show_frame(999, rgb) == [], "the same sequence number is not drawn twice"
        assert video.show_frame(1000, np.zeros((0, 0, 3), np.uint8)) == [], "a malformed frame is skipped"

        old = (cells.cols, cells.rows)
        await pilot.resize_terminal(160, 50)
        call.frame_seq += 1
        await until(pilot, lambda: video.cells is not None and (video.cells.cols, video.cells.rows) != old, 5,
                    "tile re-rendered at the new size")


async def test_over_ssh_tiles_are_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.2 22")
    app = frozen_app(small_tiles=None)
    async with app.run_test(size=(200, 60)) as pilot:
        await until(pilot, lambda: len(app._tiles) == 3, 5, "tiles shown")
        tiles = [t.video for t in app._tiles.values() if t.video.display]
        await until(pilot, lambda: all(v.cells is not None for v in tiles), 5, "frames drawn")
        assert app.tile_cells == SSH_TILE_CELLS
        assert all(v.cells.cols <= SSH_TILE_CELLS[0] and v.cells.rows <= SSH_TILE_CELLS[1]  # type: ignore[union-attr]
                   for v in tiles)


def test_fps_governor_backs_off_when_frames_are_late_and_recovers() -> None:
    governor = FpsGovernor(15, min_fps=2, hold_s=1.0, recover_s=5.0)
    now = 0.0
    assert governor.observe(now, 0.0) is None
    changes = []
    for _ in range(200):  # every tick arrives 3 intervals late: the terminal cannot keep up
        now += 3 / governor.fps
        if (fps := governor.observe(now, 0.0)) is not None:
            changes.append(fps)
    assert changes and changes[0] < 15 and governor.fps == 2, changes
    for _ in range(2000):  # on time and idle: creep back up, one step at a time
        now += 1 / governor.fps
        governor.observe(now, 0.0)
    assert governor.fps == 15
    spiky = FpsGovernor(15, hold_s=0.0)
    now = 0.0
    for tick in range(200):  # one slow repaint in eight is noise, not a terminal that cannot keep up
        now += (4 if tick % 8 == 0 else 1) / spiky.fps
        spiky.observe(now, 0.0)
    assert spiky.fps == 15
    busy = FpsGovernor(15, hold_s=0.0)
    now = 0.0
    for _ in range(20):  # on time, but rendering takes most of each interval
        now += 1 / busy.fps
        busy.observe(now, 0.8 / busy.fps)
    assert busy.fps < 15
