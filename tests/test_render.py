"""Frame → cells renderer: known frames per mode, partial refresh, byte costs."""

from __future__ import annotations

import numpy as np
import pytest

from sdparta.media.render import HALF_BLOCK, NO_COLOUR, ansi_bytes, changed_rows, render_halfblock


def frame(top: tuple[int, int, int], bottom: tuple[int, int, int], size: int = 4) -> np.ndarray:
    rgb = np.zeros((size, size, 3), dtype=np.uint8)
    rgb[: size // 2] = top
    rgb[size // 2 :] = bottom
    return rgb


def test_truecolor_top_is_foreground_bottom_is_background() -> None:
    cells = render_halfblock(frame((255, 0, 0), (0, 0, 255), size=2), cols=1, rows=1, mode="truecolor")
    assert cells.glyphs.tolist() == [[HALF_BLOCK]]
    assert cells.fg.tolist() == [[0xFC0000]] and cells.bg.tolist() == [[0x0000FC]]


def test_256_maps_to_xterm_cube() -> None:
    cells = render_halfblock(frame((255, 0, 0), (0, 255, 0), size=2), cols=1, rows=1, mode="256")
    assert cells.fg.tolist() == [[196]] and cells.bg.tolist() == [[46]]
    white = render_halfblock(frame((255, 255, 255), (0, 0, 0), size=2), cols=1, rows=1, mode="256")
    assert white.fg.tolist() == [[231]] and white.bg.tolist() == [[16]]


def test_mono_uses_luminance_ramp_and_no_colour() -> None:
    cells = render_halfblock(frame((255, 255, 255), (255, 255, 255), 2), 1, 1, "mono")
    assert cells.glyphs.tolist() == [[ord("@")]] and cells.fg.tolist() == [[NO_COLOUR]]
    dark = render_halfblock(frame((0, 0, 0), (0, 0, 0), 2), 1, 1, "mono")
    assert dark.glyphs.tolist() == [[ord(" ")]]


def test_resize_to_requested_geometry() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for mode in ("truecolor", "256", "mono"):
        cells = render_halfblock(rgb, cols=80, rows=24, mode=mode)
        assert cells.glyphs.shape == cells.fg.shape == cells.bg.shape == (24, 80)


def test_only_changed_rows_are_reported() -> None:
    rgb = np.zeros((48, 80, 3), dtype=np.uint8)
    before = render_halfblock(rgb, 80, 24)
    rgb[10, 5] = (200, 100, 50)  # pixel row 10 → cell row 5
    after = render_halfblock(rgb, 80, 24)
    assert changed_rows(before, after) == [5]
    assert changed_rows(after, after) == []
    assert changed_rows(None, after) == list(range(24))
    assert changed_rows(render_halfblock(rgb, 40, 12), after) == list(range(24))


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown video mode"):
        render_halfblock(np.zeros((2, 2, 3), np.uint8), 1, 1, "sixel")


def test_cheaper_modes_write_fewer_bytes() -> None:
    rgb = np.random.default_rng(2).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    sizes = {m: ansi_bytes(render_halfblock(rgb, 80, 24, m)) for m in ("truecolor", "256", "mono")}
    assert sizes["mono"] < sizes["256"] < sizes["truecolor"]
    assert ansi_bytes(render_halfblock(rgb, 80, 24), rows=[0]) < sizes["truecolor"] / 10
