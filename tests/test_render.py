"""Frame → cells renderer: known frames per mode, sampling, partial refresh, byte costs, speed."""

from __future__ import annotations

import numpy as np
import pytest

from sdparta.media.render import (
    HALF_BLOCK,
    NO_COLOUR,
    Cells,
    ansi_bytes,
    ansi_rows,
    changed_rows,
    fit_size,
    render_halfblock,
    sample,
    split_style_key,
)


def frame(top: tuple[int, int, int], bottom: tuple[int, int, int], size: int = 2) -> np.ndarray:
    """A size×size frame: upper half one colour, lower half another."""
    rgb = np.zeros((size, size, 3), dtype=np.uint8)
    rgb[: size // 2] = top
    rgb[size // 2 :] = bottom
    return rgb


def test_2x2_pure_colour_frame_in_truecolor() -> None:
    """Two columns, one cell row: top pixel is the foreground, bottom pixel the background."""
    cells = render_halfblock(frame((255, 0, 0), (0, 0, 255)), cols=2, rows=1, mode="truecolor")
    assert cells.glyphs.tolist() == [[HALF_BLOCK, HALF_BLOCK]]
    assert cells.fg.tolist() == [[0xFF0000, 0xFF0000]] and cells.bg.tolist() == [[0x0000FF, 0x0000FF]]


def test_truecolor_keeps_6_bits_per_channel() -> None:
    rgb = np.array([[[0x12, 0x34, 0x56]], [[0xFF, 0xFF, 0xFF]]], dtype=np.uint8)
    cells = render_halfblock(rgb, 1, 1, "truecolor")
    # 6 high bits kept, then replicated into the low 2 bits: white stays white, 0x12 → 0x10|0x00
    assert cells.fg.tolist() == [[0x103455]] and cells.bg.tolist() == [[0xFFFFFF]]
    nearby = np.array([[[0x13, 0x35, 0x57]], [[0xFE, 0xFE, 0xFE]]], dtype=np.uint8)
    again = render_halfblock(nearby, 1, 1, "truecolor")
    assert again.fg.tolist() == cells.fg.tolist(), "sensor noise below the quantum must not change styles"


@pytest.mark.parametrize(("rgb", "index"), [
    ((255, 0, 0), 196), ((0, 255, 0), 46), ((0, 0, 255), 21), ((255, 255, 255), 231), ((0, 0, 0), 16),
    ((95, 135, 175), 67),  # exact cube levels (1, 2, 3)
    ((128, 128, 128), 244), ((238, 238, 238), 255), ((8, 8, 8), 232),  # grey ramp: 8 + 10·i
])
def test_256_maps_to_nearest_xterm_colour(rgb: tuple[int, int, int], index: int) -> None:
    cells = render_halfblock(frame(rgb, rgb), cols=2, rows=1, mode="256")
    assert cells.fg.tolist() == [[index, index]] and cells.bg.tolist() == [[index, index]]


def test_mono_uses_luminance_ramp_and_no_colour() -> None:
    white = render_halfblock(frame((255, 255, 255), (255, 255, 255)), 2, 1, "mono")
    assert white.glyphs.tolist() == [[ord("@")] * 2]
    assert white.fg.tolist() == white.bg.tolist() == [[NO_COLOUR] * 2]
    assert render_halfblock(frame((0, 0, 0), (0, 0, 0)), 2, 1, "mono").glyphs.tolist() == [[ord(" ")] * 2]
    half = render_halfblock(frame((255, 255, 255), (0, 0, 0)), 1, 1, "mono")  # averages the two pixels
    assert chr(half.glyphs[0, 0]) in "=+"
    assert "\x1b[3" not in "".join(ansi_rows(white)) and "\x1b[4" not in "".join(ansi_rows(white))


def test_resize_to_requested_geometry() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for mode in ("truecolor", "256", "mono"):
        cells = render_halfblock(rgb, cols=80, rows=24, mode=mode)
        assert cells.glyphs.shape == cells.fg.shape == cells.bg.shape == (24, 80)
    big = render_halfblock(np.zeros((4, 4, 3), np.uint8), cols=40, rows=20)  # enlarging works too
    assert big.glyphs.shape == (20, 40)


def test_shrinking_averages_areas_instead_of_picking_pixels() -> None:
    """A 1-pixel checkerboard shrunk 4× becomes mid grey, not (aliased) black or white."""
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    rgb = np.repeat(checker[..., None], 3, axis=2)
    small = sample(rgb, 16, 16)
    assert small.shape == (16, 16, 3)
    assert np.all(np.abs(small.astype(int) - 128) <= 1)


def test_fit_size_keeps_aspect_ratio() -> None:
    # 4:3 frame: half-block pixels are square, so 40 cols take 15 rows (30 pixels)
    assert fit_size(160, 120, 40, 100) == (40, 15)
    assert fit_size(160, 120, 100, 15) == (40, 15)
    assert fit_size(120, 160, 80, 20) == (30, 20)
    assert fit_size(160, 120, 0, 10) == (0, 10)


def test_only_changed_rows_are_reported() -> None:
    rgb = np.zeros((48, 80, 3), dtype=np.uint8)
    before = render_halfblock(rgb, 80, 24)
    rgb[10, 5] = (200, 100, 50)  # pixel row 10 → cell row 5
    after = render_halfblock(rgb, 80, 24)
    assert changed_rows(before, after) == [5]
    assert changed_rows(after, after) == []
    assert changed_rows(None, after) == list(range(24))
    assert changed_rows(render_halfblock(rgb, 40, 12), after) == list(range(24))
    assert changed_rows(render_halfblock(rgb, 80, 24, "256"), after) == list(range(24))


def test_style_keys_round_trip() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for mode in ("truecolor", "256"):
        cells = render_halfblock(rgb, 8, 4, mode)
        keys = cells.style_keys()
        for y, x in ((0, 0), (3, 7), (2, 5)):
            assert split_style_key(mode, int(keys[y, x])) == (int(cells.fg[y, x]), int(cells.bg[y, x]))


def test_unknown_mode_and_bad_frames_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown video mode"):
        render_halfblock(np.zeros((2, 2, 3), np.uint8), 1, 1, "sixel")
    for bad in (np.zeros((2, 2, 3), np.float32), np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)):
        with pytest.raises(ValueError, match="H×W×3 uint8"):
            render_halfblock(bad, 1, 1)


def test_ansi_rows_are_real_escape_sequences() -> None:
    cells = render_halfblock(frame((255, 0, 0), (0, 0, 255)), 2, 1, "truecolor")
    assert ansi_rows(cells) == ["\x1b[1;1H\x1b[38;2;255;0;0;48;2;0;0;255m▀▀\x1b[0m"]
    cube = render_halfblock(frame((255, 0, 0), (0, 0, 255)), 2, 1, "256")
    assert ansi_rows(cube, [0], x=4, y=2) == ["\x1b[3;5H\x1b[38;5;196;48;5;21m▀▀\x1b[0m"]
    assert ansi_bytes(cells) == len(ansi_rows(cells)[0].encode())


def test_cheaper_modes_write_fewer_bytes() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    sizes = {m: ansi_bytes(render_halfblock(rgb, 80, 24, m)) for m in ("truecolor", "256", "mono")}
    assert sizes["mono"] < sizes["256"] < sizes["truecolor"]
    assert ansi_bytes(render_halfblock(rgb, 80, 24), rows=[0]) < sizes["truecolor"] / 10


def test_cells_are_plain_arrays() -> None:
    cells = render_halfblock(np.zeros((4, 4, 3), np.uint8), 2, 2)
    assert isinstance(cells, Cells) and all(isinstance(a, np.ndarray) for a in (cells.glyphs, cells.fg, cells.bg))


def test_strips_carry_exactly_the_cells_colours() -> None:
    """The UI's strip builder (cached segments per run) reproduces every cell's colours."""
    from sdparta.ui.video import RunIndex, StripPainter

    painter = StripPainter()

    rgb = np.random.default_rng(5).integers(0, 4, (12, 20, 3), dtype=np.uint8) * 85  # many equal runs
    for mode in ("truecolor", "256"):
        cells = render_halfblock(rgb, 20, 6, mode)
        runs = RunIndex(cells)
        for y in range(cells.rows):
            strip = painter.row_strip(cells, y, runs)
            assert strip.cell_length == cells.cols and strip.text == "▀" * cells.cols
            x = 0
            for segment in strip:
                for _ in segment.text:
                    fg, bg = segment.style.color, segment.style.bgcolor  # type: ignore[union-attr]
                    if mode == "truecolor":
                        assert fg.triplet.hex == f"#{int(cells.fg[y, x]):06x}"  # type: ignore[union-attr]
                        assert bg.triplet.hex == f"#{int(cells.bg[y, x]):06x}"  # type: ignore[union-attr]
                    else:
                        assert (fg.number, bg.number) == (cells.fg[y, x], cells.bg[y, x])  # type: ignore[union-attr]
                    x += 1
            assert len(list(strip)) == len(runs.packed[runs.bounds[y]:runs.bounds[y + 1]]), "one segment per run"
    mono = render_halfblock(rgb, 20, 6, "mono")
    assert all(s.style is None for s in painter.row_strip(mono, 0)), "mono strips carry no colour"
