"""The video tile: a line-API widget drawing pre-quantized half-block cells with cached styles,
refreshing only the rows that changed."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich_pixels import Pixels
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from sdparta.media.render import Cells, changed_rows, render_halfblock

_STYLE_CACHE: dict[tuple[str, int, int], Style] = {}


def cell_style(mode: str, fg: int, bg: int) -> Style:
    """Styles are cached per colour pair: quantized colours keep this dict small."""
    key = (mode, fg, bg)
    style = _STYLE_CACHE.get(key)
    if style is None:
        if mode == "truecolor":
            style = Style(color=f"#{fg:06x}", bgcolor=f"#{bg:06x}")
        elif mode == "256":
            style = Style(color=f"color({fg})", bgcolor=f"color({bg})")
        else:
            style = Style()
        if len(_STYLE_CACHE) > 50_000:
            _STYLE_CACHE.clear()
        _STYLE_CACHE[key] = style
    return style


def cells_row_strip(cells: Cells, y: int) -> Strip:
    """One row of cells as segments, one segment per run of equal colours."""
    glyphs, fg, bg = cells.glyphs[y], cells.fg[y], cells.bg[y]
    if cells.mode == "mono":
        return Strip([Segment("".join(map(chr, glyphs.tolist())))], cells.cols)
    boundaries = np.flatnonzero((fg[1:] != fg[:-1]) | (bg[1:] != bg[:-1])) + 1
    starts = [0, *boundaries.tolist()]
    ends = [*boundaries.tolist(), cells.cols]
    text = "".join(map(chr, glyphs.tolist()))
    fg_list, bg_list = fg.tolist(), bg.tolist()
    return Strip([Segment(text[s:e], cell_style(cells.mode, fg_list[s], bg_list[s]))
                  for s, e in zip(starts, ends, strict=True)], cells.cols)


class VideoTile(Widget):
    """Draws the latest frame it was given; the app feeds frames at the tile's fps."""

    DEFAULT_CSS = "VideoTile { height: 1fr; width: 1fr; }"

    def __init__(self, mode: str = "truecolor", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.mode = mode
        self.cells: Cells | None = None
        self._strips: dict[int, Strip] = {}
        self.last_seq = -1
        self.render_seconds = 0.0
        self.rows_refreshed = 0

    def show_frame(self, seq: int, rgb: np.ndarray) -> list[int]:
        """Render a new frame at the current size; refresh only the changed rows."""
        if seq == self.last_seq:
            return []
        self.last_seq = seq
        size = self.content_size
        if size.width <= 0 or size.height <= 0:
            return []
        started = time.perf_counter()
        cells = render_halfblock(rgb, size.width, size.height, self.mode)
        rows = changed_rows(self.cells, cells)
        self.cells = cells
        for y in rows:
            self._strips.pop(y, None)
            self.refresh(Region(0, y, size.width, 1))
        self.rows_refreshed += len(rows)
        self.render_seconds = time.perf_counter() - started
        return rows

    def on_resize(self) -> None:
        self.cells = None
        self._strips.clear()
        self.last_seq = -1
        self.refresh()

    def render_line(self, y: int) -> Strip:
        cells = self.cells
        width = self.content_size.width
        if cells is None or y >= cells.rows:
            return Strip.blank(width)
        strip = self._strips.get(y)
        if strip is None:
            strip = cells_row_strip(cells, y)
            self._strips[y] = strip
        return strip.crop_extend(0, width, None)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return container.height


def identicon(fingerprint: str, size: int = 7) -> Pixels:
    """A symmetric randomart of a key fingerprint, for comparing keys out of band (like SSH's)."""
    digest = hashlib.sha256(fingerprint.encode()).digest()
    colour = f"#{digest[0]:02x}{digest[1]:02x}{digest[2]:02x}"
    half = (size + 1) // 2
    rows = []
    for y in range(size):
        bits = [(digest[3 + (y * half + x) // 8] >> ((y * half + x) % 8)) & 1 for x in range(half)]
        full = bits + bits[: size - half][::-1]
        rows.append("".join("#" if b else "." for b in full))
    mapping = {"#": Segment("██", Style(color=colour)), ".": Segment("  ")}
    return Pixels.from_ascii("\n".join(rows), mapping)


class Identicon(Static):
    """The identicon of a participant without video."""

    def __init__(self, fingerprint: str, **kwargs: object) -> None:
        super().__init__(identicon(fingerprint), **kwargs)  # type: ignore[arg-type]
        self.fingerprint = fingerprint
