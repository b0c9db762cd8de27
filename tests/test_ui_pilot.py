"""The app driven by Textual's Pilot against a real portal process and real bot processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, RichLog, Static

from sdparta.engine.call import Call, CallConfig
from sdparta.ui.app import SdpartaApp
from support.procs import BotProcess, peers_by_name, start_bot

pytestmark = pytest.mark.integration


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


async def test_app_in_a_real_room(tmp_path: Path, portal) -> None:  # type: ignore[no-untyped-def]
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
            await until(pilot, lambda: any(tmp_path.glob("sdparta-*.json")), 10, "timeline dump written")

            await pilot.press("ctrl+q")
            await until(pilot, lambda: not call.running, 20, "engine stopped")
        assert not any(t.name == "sdparta-engine" for t in threading.enumerate())
    finally:
        call.stop()
        for bot in bots:
            bot.stop()


async def test_unreachable_portal_is_a_notification_not_a_freeze(tmp_path: Path) -> None:
    from support.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    call = Call(CallConfig(room="nowhere", portals=[dead], name="tester", video="none", audio="none"))
    app = SdpartaApp(call, fps=5, dump_dir=tmp_path)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: any("unreachable" in n.message for n in app._notifications), 20,
                        "a notification about the unreachable portal")
            assert "error" in str(app.query_one("#status", Static).render())
            await pilot.press("question_mark")  # the UI still answers keys while the engine retries
            await pilot.press("escape", "ctrl+q")
            await until(pilot, lambda: not call.running, 20, "engine stopped")
    finally:
        call.stop()
