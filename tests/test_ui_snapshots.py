"""Snapshot tests of the main screen and the ICE panel, with a frozen call and fixed frames."""

from __future__ import annotations

import os
import time

from sdparta.ui.app import SdpartaApp
from support.frozen_call import FrozenCall

os.environ["TZ"] = "UTC"  # chat timestamps are rendered in local time
time.tzset()


def make_app() -> SdpartaApp:
    return SdpartaApp(FrozenCall(), video_mode="256", fps=5)  # type: ignore[arg-type]


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause(0.5)


def test_main_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_settle)


def test_ice_panel(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(160, 45), press=["i"], run_before=_settle)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(120, 40), press=["question_mark"], run_before=_settle)
