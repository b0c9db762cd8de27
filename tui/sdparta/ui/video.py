"""Video tiles: a line-API widget drawing pre-quantized half-block cells, and the governor that
chooses their frame rate.

Why it is built this way (DESIGN §5, §7): the terminal is the bottleneck, so the tile keeps one
cached ``Segment`` per (colours, run length) in a painter of its own, redraws only the rows whose
cells changed, keeps the frame's aspect ratio, and reports how long it was busy so the app can
lower the frame rate when frames cannot be written in time.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from sdparta.media.render import (
    Cells,
    changed_rows,
    fit_size,
    is_frame,
    render_halfblock,
    row_runs,
    split_style_key,
)

RUN_BITS = 12  # a cached segment is keyed by (style key << RUN_BITS) | run length
MAX_RUN = (1 << RUN_BITS) - 1
CACHE_LIMIT = 100_000  # entries per cache; cleared (not evicted one by one) when exceeded


class RunIndex:
    """Every run of equal colours in one frame, found in one vectorised pass: per row, a list of
    packed ``style key << RUN_BITS | length`` ints (the segment cache's keys)."""

    __slots__ = ("bounds", "cells", "packed")

    def __init__(self, cells: Cells, keys: np.ndarray | None = None) -> None:
        keys = cells.style_keys() if keys is None else keys
        rows, cols = keys.shape
        starts = np.ones((rows, cols), dtype=bool)
        starts[:, 1:] = keys[:, 1:] != keys[:, :-1]
        flat = np.flatnonzero(starts)
        run_rows, run_cols = flat // cols, flat % cols
        ends = np.full(flat.shape, cols, dtype=np.int64)
        same_row = run_rows[1:] == run_rows[:-1]
        ends[:-1][same_row] = run_cols[1:][same_row]
        self.cells = cells
        self.packed: list[int] = ((keys.ravel()[flat] << RUN_BITS) | (ends - run_cols)).tolist()
        self.bounds: list[int] = np.searchsorted(run_rows, np.arange(rows + 1)).tolist()


class StripPainter:
    """Turns rows of cells into Strips, with caches of its own: one ``Color`` per colour value, one
    ``Style`` per style key (parsed once) and one ``Segment`` per (style key, run length).

    Each tile owns one, so the caches live and die with the widget; each cache is cleared whole
    when it passes CACHE_LIMIT entries (cheaper than evicting one by one, and camera content
    refills it within a frame or two)."""

    __slots__ = ("_colours", "_last_index", "_segments", "_styles")

    def __init__(self) -> None:
        self._colours: dict[tuple[str, int], Color] = {}
        self._styles: dict[tuple[str, int], Style] = {}
        self._segments: dict[str, dict[int, Segment]] = {"truecolor": {}, "256": {}}
        self._last_index: RunIndex | None = None  # runs of the last frame asked about without its index

    def colour(self, mode: str, value: int) -> Color:
        """The cached colour for one packed value (0xRRGGBB in truecolor, an xterm index in 256)."""
        colour = self._colours.get((mode, value))
        if colour is None:
            if mode == "truecolor":
                colour = Color.from_rgb(value >> 16, (value >> 8) & 255, value & 255)
            else:
                colour = Color.from_ansi(value)
            if len(self._colours) > CACHE_LIMIT:
                self._colours.clear()
            self._colours[(mode, value)] = colour
        return colour

    def cell_style(self, mode: str, key: int) -> Style:
        """The cached style for one style key of :meth:`Cells.style_keys`."""
        style = self._styles.get((mode, key))
        if style is None:
            fg, bg = split_style_key(mode, key)
            style = Style.from_color(self.colour(mode, fg), self.colour(mode, bg)) if mode != "mono" else Style()
            if len(self._styles) > CACHE_LIMIT:
                self._styles.clear()
            self._styles[(mode, key)] = style
        return style

    def _segment(self, mode: str, glyph: str, packed: int) -> Segment:
        """Build (and cache) the segment for a run: ``packed`` = style key << RUN_BITS | length."""
        segment = Segment(glyph * (packed & MAX_RUN), self.cell_style(mode, packed >> RUN_BITS))
        cache = self._segments[mode]
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        cache[packed] = segment
        return segment

    def row_strip(self, cells: Cells, y: int, runs: RunIndex | None = None) -> Strip:
        """One row of cells as a Strip, one cached segment per run of equal colours.

        In colour modes every glyph is the half block, so a run is fully described by its style key
        and length; camera content hits the cache ~98% of the time at 6 bits per channel. Runs are
        found for the whole frame at once (pass the frame's RunIndex, or the last frame asked about
        is remembered), so the per-row Python work is one list comprehension of dict lookups."""
        if cells.mode == "mono":
            return Strip([Segment("".join(map(chr, cells.glyphs[y].tolist())))], cells.cols)
        if cells.cols > MAX_RUN:  # wider than any terminal, but stay correct
            row_keys = cells.style_keys()[y]
            starts, ends = row_runs(row_keys)
            return Strip([Segment(chr(int(cells.glyphs[y, s])) * (e - s), self.cell_style(cells.mode, int(row_keys[s])))
                          for s, e in zip(starts, ends, strict=True)], cells.cols)
        if runs is None or runs.cells is not cells:
            last = self._last_index
            runs = last if last is not None and last.cells is cells else None
            if runs is None:
                runs = self._last_index = RunIndex(cells)
        glyph = chr(int(cells.glyphs[y, 0]))
        mode = cells.mode
        get = self._segments[mode].get
        return Strip([get(p) or self._segment(mode, glyph, p) for p in runs.packed[runs.bounds[y]:runs.bounds[y + 1]]],
                     cells.cols)


#: The painter of callers that have no tile (the renderer bench and its tests), so that their
#: repeated calls hit warm caches as a tile's do. Tiles never use it: each owns its painter.
class FpsGovernor:
    """Chooses the tile frame rate from how late the frame timer fires and how long tiles were busy.

    Lateness catches everything that makes frames miss their slot: a terminal (or SSH link) that
    drains output slowly (Textual's writer queue fills and the event loop blocks), Textual's own
    repaint, and a machine whose cores are taken by something else. It steps down by a quarter
    when most of the last WINDOW ticks missed their slot (single spikes do not count) and climbs
    back by 1 fps after each calm spell, so it settles just under what the terminal can take."""

    WINDOW = 8

    def __init__(self, max_fps: int, min_fps: int = 2, *, hold_s: float = 2.0, recover_s: float = 5.0) -> None:
        self.max_fps = max(1, max_fps)
        self.min_fps = max(1, min(min_fps, self.max_fps))
        self.fps = self.max_fps
        self.hold_s = hold_s
        self.recover_s = recover_s
        self._last_tick: float | None = None
        self._late: deque[bool] = deque(maxlen=self.WINDOW)
        self._changed_at = float("-inf")
        self._calm_since: float | None = None

    def observe(self, now: float, busy_s: float) -> int | None:
        """Record one timer tick; return the new fps when it should change, else None."""
        interval = 1.0 / self.fps
        last, self._last_tick = self._last_tick, now
        if last is None:
            return None
        elapsed = now - last
        self._late.append(elapsed > 1.5 * interval + 0.01 or busy_s > 0.5 * interval)
        calm = elapsed < 1.25 * interval + 0.005 and busy_s < 0.25 * interval
        if not calm:
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = now
        if now - self._changed_at < self.hold_s:
            return None
        if len(self._late) == self.WINDOW and sum(self._late) > self.WINDOW // 2 and self.fps > self.min_fps:
            return self._set(max(self.min_fps, self.fps * 3 // 4), now)
        if self._calm_since is not None and now - self._calm_since >= self.recover_s and self.fps < self.max_fps:
            return self._set(self.fps + 1, now)
        return None

    def _set(self, fps: int, now: float) -> int:
        self.fps, self._changed_at, self._calm_since = fps, now, None
        self._late.clear()
        self._last_tick = None  # the timer is recreated: the next tick has no predecessor
        return fps


class VideoTile(Widget):
    """Draws the latest frame it was given, fitted and centred; the app feeds frames at its fps.

    ``max_cells`` caps the picture (cols, rows), e.g. smaller tiles over SSH."""

    DEFAULT_CSS = "VideoTile { height: 1fr; width: 1fr; }"

    def __init__(self, mode: str = "truecolor", *, max_cells: tuple[int, int] | None = None,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.mode = mode
        self.max_cells = max_cells
        self.cells: Cells | None = None
        self._runs: RunIndex | None = None
        self._origin = (0, 0)  # where the picture starts inside the widget
        self._strips: dict[int, Strip] = {}
        self.painter = StripPainter()  # this tile's style and segment caches
        self.last_seq = -1
        self.render_seconds = 0.0  # last show_frame
        self.busy_seconds = 0.0  # show_frame + render_line since take_busy()
        self.rows_refreshed = 0
        self.frames_shown = 0

    def take_busy(self) -> float:
        busy, self.busy_seconds = self.busy_seconds, 0.0
        return busy

    def picture_size(self, frame_width: int, frame_height: int) -> tuple[int, int]:
        """Cells the picture gets: the content area (capped), fitted to the frame's aspect ratio."""
        size = self.content_size
        cols, rows = size.width, size.height
        if self.max_cells is not None:
            cols, rows = min(cols, self.max_cells[0]), min(rows, self.max_cells[1])
        return fit_size(frame_width, frame_height, cols, rows)

    def show_frame(self, seq: int, rgb: np.ndarray) -> list[int]:
        """Render a new frame; refresh only the rows whose cells changed. Returns those rows."""
        if seq == self.last_seq or not is_frame(rgb):  # a malformed frame is skipped, never a crash
            return []
        size = self.content_size
        if size.width <= 0 or size.height <= 0:
            return []
        self.last_seq = seq
        started = time.perf_counter()
        cols, rows = self.picture_size(rgb.shape[1], rgb.shape[0])
        cells = render_halfblock(rgb, cols, rows, self.mode)
        origin = ((size.width - cols) // 2, (size.height - rows) // 2)
        previous = self.cells
        self.cells = cells
        self._runs = RunIndex(cells) if cells.mode != "mono" and cells.cols <= MAX_RUN else None
        if previous is None or origin != self._origin or previous.glyphs.shape != cells.glyphs.shape:
            self._origin = origin
            self._strips.clear()
            self.refresh()
            changed = list(range(rows))
        else:
            changed = changed_rows(previous, cells)
            x0, y0 = origin
            for y in changed:
                self._strips.pop(y0 + y, None)
                self.refresh(Region(x0, y0 + y, cols, 1))
        self.rows_refreshed += len(changed)
        self.frames_shown += 1
        self.render_seconds = time.perf_counter() - started
        self.busy_seconds += self.render_seconds
        return changed

    def clear(self) -> None:
        """Forget the picture (e.g. the peer turned its camera off)."""
        self.cells = self._runs = None
        self._strips.clear()
        self.last_seq = -1
        self.refresh()

    def on_resize(self) -> None:
        self.clear()  # the next frame is rendered at the new size

    def render_line(self, y: int) -> Strip:
        started = time.perf_counter()
        width = self.content_size.width
        cells = self.cells
        x0, y0 = self._origin
        if cells is None or not y0 <= y < y0 + cells.rows:
            return Strip.blank(width)
        strip = self._strips.get(y)
        if strip is None:
            row = self.painter.row_strip(cells, y - y0, self._runs)
            right = max(0, width - x0 - cells.cols)
            strip = Strip.join([Strip.blank(x0), row, Strip.blank(right)]) if x0 or right else row
            self._strips[y] = strip
        self.busy_seconds += time.perf_counter() - started
        return strip

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return container.height
