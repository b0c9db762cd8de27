"""Snapshot tests of the main screen (at 120×40 and 80×24), the ICE panel and the help screen: a frozen call (fixed
snapshot, fixed test-pattern frames) and a frozen clock (chat times rendered in UTC)."""

from __future__ import annotations

import time

from sdparta.ui.app import SdpartaApp
from support.frozen_call import FrozenCall


def make_app() -> SdpartaApp:
    return SdpartaApp(FrozenCall(), video_mode="256", fps=5, small_tiles=False,  # type: ignore[arg-type]
                      local_time=time.gmtime)


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    """Wait until every visible tile has drawn its frame (frames are pulled by a timer)."""
    app = pilot.app
    for _ in range(600):  # up to 30 s: under CI load the frame timer can be late; 2.5 s was not always enough
        tiles = [t.video for t in app._tiles.values() if t.video.display]
        if tiles and all(v.cells is not None for v in tiles) and app.self_tile.video.cells is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause()


def test_main_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_settle)


def test_ice_panel(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(160, 45), press=["i"], run_before=_settle)


def test_small_terminal(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """80×24: no self view (our key on the "you" line), remote tiles get the room, hints kept."""
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_settle)


def test_ice_panel_on_a_small_terminal(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """80×24 with ``i``: the panel takes the whole screen, live figures first, a footer to scroll."""
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["i"], run_before=_settle)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(120, 40), press=["question_mark"], run_before=_settle)


def test_mono_over_ssh(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = SdpartaApp(FrozenCall(), video_mode="mono", fps=5, small_tiles=True,  # type: ignore[arg-type]
                     local_time=time.gmtime)
    assert snap_compare(app, terminal_size=(100, 30), run_before=_settle)
