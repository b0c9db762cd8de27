"""Video frame → terminal cells, in numpy only (no rich/textual here).

Two pixels per cell with the upper half block: the foreground colour is the top pixel, the
background the bottom one.  Colours are quantized here, once per frame, so the UI's style cache
stays small and hits almost always: truecolor keeps 6 bits per channel, ``256`` picks the nearest
xterm colour-cube or grey-ramp entry, ``mono`` uses an ASCII luminance ramp and no colour at all
(for dumb terminals and thin SSH links).  The terminal, not WebRTC, is the bottleneck (DESIGN §5),
so everything here is vectorised; the only per-cell Python work left is in the UI's strip builder
and in :func:`ansi_rows`, which exists to measure bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("truecolor", "256", "mono")
HALF_BLOCK = 0x2580  # ▀
MONO_RAMP = np.array([ord(c) for c in " .:-=+*#%@"], dtype=np.uint32)
NO_COLOUR = -1
#: The six levels of xterm's 6×6×6 colour cube (indices 16–231) are not evenly spaced.
CUBE_LEVELS = np.array([0, 95, 135, 175, 215, 255], dtype=np.int32)
_CUBE_THRESHOLDS = (CUBE_LEVELS[1:] + CUBE_LEVELS[:-1] + 1) // 2  # midpoints between levels
#: Largest box (per axis) averaged for one output pixel; beyond it we stride-sample, so cost stays
#: bounded for big camera frames.
MAX_BOX = 4


@dataclass(frozen=True, slots=True)
class Cells:
    """One rendered frame: glyph code points and colours per cell (rows × cols arrays).

    Colours are packed 0xRRGGBB in truecolor mode, xterm indices 16–255 in 256 mode, -1 in mono."""

    mode: str
    glyphs: np.ndarray
    fg: np.ndarray
    bg: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.glyphs.shape[0])

    @property
    def cols(self) -> int:
        return int(self.glyphs.shape[1]) if self.glyphs.ndim == 2 else 0

    def style_keys(self) -> np.ndarray:
        """One int per cell naming its (fg, bg) pair, so a UI can cache one style per key.

        Decode with :func:`split_style_key`."""
        if self.mode == "truecolor":
            return (self.fg.astype(np.int64) << 24) | self.bg.astype(np.int64)
        if self.mode == "256":
            return (self.fg.astype(np.int64) << 8) | self.bg.astype(np.int64)
        return np.zeros(self.glyphs.shape, dtype=np.int64)


def split_style_key(mode: str, key: int) -> tuple[int, int]:
    """Inverse of :meth:`Cells.style_keys` for one key: (fg, bg)."""
    if mode == "truecolor":
        return key >> 24, key & 0xFFFFFF
    if mode == "256":
        return key >> 8, key & 0xFF
    return NO_COLOUR, NO_COLOUR


def fit_size(frame_width: int, frame_height: int, cols: int, rows: int) -> tuple[int, int]:
    """The largest (cols, rows) inside the given cells that keeps the frame's aspect ratio.

    A half-block pixel is about square (a cell is ~1:2 and holds two pixels stacked)."""
    if frame_width <= 0 or frame_height <= 0 or cols <= 0 or rows <= 0:
        return max(0, cols), max(0, rows)
    scale = min(cols / frame_width, rows * 2 / frame_height)
    return max(1, min(cols, round(frame_width * scale))), max(1, min(rows, round(frame_height * scale / 2)))


def _axis_indices(source: int, target: int) -> np.ndarray:
    """Source indices per target pixel (target × k): a box of k pixels spread over the pixel's span
    when shrinking by ≥ 2, else the single nearest one."""
    starts = (np.arange(target) * source) // target
    span = source // target if target else 1
    k = min(MAX_BOX, span)
    if k <= 1:
        return starts[:, None]
    return starts[:, None] + ((np.arange(k) * span) // k)[None, :]


def sample(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an H×W×3 uint8 frame to ``height`` × ``width`` pixels: box average when shrinking
    (at most MAX_BOX² samples per pixel), nearest neighbour when enlarging. Separable, so each
    axis is one ``take`` and one sum."""
    ys = _axis_indices(rgb.shape[0], height)
    xs = _axis_indices(rgb.shape[1], width)
    count = ys.shape[1] * xs.shape[1]
    acc = _box_sum(rgb, ys, axis=0, widen=count > 1)
    acc = _box_sum(acc, xs, axis=1, widen=False)
    if count == 1:
        return acc
    return ((acc + count // 2) // count).astype(np.uint8)


def _box_sum(pixels: np.ndarray, indices: np.ndarray, axis: int, widen: bool) -> np.ndarray:
    """Sum of the k samples per output pixel along one axis (k ≤ MAX_BOX, so a short loop)."""
    total = np.take(pixels, indices[:, 0], axis=axis)
    if widen:
        total = total.astype(np.uint16)
    for j in range(1, indices.shape[1]):
        total += np.take(pixels, indices[:, j], axis=axis)
    return total


def _lut_256() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel value: its nearest cube level index and that level; per grey value: ramp step."""
    values = np.arange(256, dtype=np.int32)
    level = np.searchsorted(_CUBE_THRESHOLDS, values, side="right").astype(np.int32)
    grey_step = np.clip((values - 8 + 5) // 10, 0, 23).astype(np.int32)  # ramp is 8, 18, …, 238
    return level, CUBE_LEVELS[level], grey_step


_LEVEL, _LEVEL_VALUE, _GREY_STEP = _lut_256()


def _xterm256_exact(pixels: np.ndarray) -> np.ndarray:
    """Nearest xterm-256 colour: the 6×6×6 cube (16–231) or the grey ramp (232–255)."""
    p = pixels.astype(np.int32)
    levels = _LEVEL[pixels]
    cube_err = ((_LEVEL_VALUE[pixels] - p) ** 2).sum(axis=-1)
    cube = 16 + 36 * levels[..., 0] + 6 * levels[..., 1] + levels[..., 2]
    grey_step = _GREY_STEP[p.sum(axis=-1) // 3]
    grey_err = (((8 + 10 * grey_step)[..., None] - p) ** 2).sum(axis=-1)
    return np.where(grey_err < cube_err, 232 + grey_step, cube).astype(np.int32)


TABLE_BITS = 6  # per channel, for the 256-colour lookup table (2^18 entries, built on first use)
_xterm256_lut: np.ndarray | None = None


def _xterm256_table() -> np.ndarray:
    """The exact mapping evaluated once at the centre of every 6-bit-per-channel bucket."""
    step = 1 << (8 - TABLE_BITS)
    v = (np.arange(1 << TABLE_BITS) * step + step // 2).astype(np.uint8)
    grid = np.stack(np.meshgrid(v, v, v, indexing="ij"), axis=-1)
    return _xterm256_exact(grid).reshape(-1).astype(np.uint8)


def _xterm256(pixels: np.ndarray) -> np.ndarray:
    """xterm-256 index per pixel by table lookup (the exact search costs ~10× more per frame)."""
    global _xterm256_lut
    if _xterm256_lut is None:
        _xterm256_lut = _xterm256_table()
    q = (pixels >> (8 - TABLE_BITS)).astype(np.int32)
    index = (q[..., 0] << (2 * TABLE_BITS)) | (q[..., 1] << TABLE_BITS) | q[..., 2]
    return _xterm256_lut[index].astype(np.int32)


def _quantize_truecolor(pixels: np.ndarray) -> np.ndarray:
    """Packed 0xRRGGBB with 6 bits per channel, high bits replicated so white stays 0xFFFFFF."""
    q = pixels >> 2
    q = ((q << 2) | (q >> 4)).astype(np.int32)
    return (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]


def is_frame(rgb: np.ndarray) -> bool:
    """True for what the renderer takes: a non-empty H×W×3 uint8 array."""
    return rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and rgb.shape[0] > 0 and rgb.shape[1] > 0


def render_halfblock(rgb: np.ndarray, cols: int, rows: int, mode: str = "truecolor") -> Cells:
    """Render an H×W×3 uint8 RGB frame into exactly ``cols`` × ``rows`` cells (no aspect fitting:
    use :func:`fit_size` first to keep proportions)."""
    if mode not in MODES:
        raise ValueError(f"unknown video mode {mode!r} (choose from {', '.join(MODES)})")
    if not is_frame(rgb):
        raise ValueError(f"expected a non-empty H×W×3 uint8 frame, got {rgb.shape} {rgb.dtype}")
    cols, rows = max(1, cols), max(1, rows)
    pixels = sample(rgb, cols, rows * 2)
    if mode == "mono":
        luma = (pixels[..., 0].astype(np.uint32) * 77 + pixels[..., 1].astype(np.uint32) * 150
                + pixels[..., 2].astype(np.uint32) * 29) >> 8
        cell_luma = (luma[0::2] + luma[1::2] + 1) // 2
        glyphs = MONO_RAMP[(cell_luma * (len(MONO_RAMP) - 1) + 127) // 255]
        empty = np.full((rows, cols), NO_COLOUR, dtype=np.int32)
        return Cells(mode, glyphs, empty, empty.copy())
    glyphs = np.full((rows, cols), HALF_BLOCK, dtype=np.uint32)
    quantize = _xterm256 if mode == "256" else _quantize_truecolor
    return Cells(mode, glyphs, quantize(pixels[0::2]), quantize(pixels[1::2]))


def changed_rows(previous: Cells | None, current: Cells) -> list[int]:
    """Rows whose glyphs or colours differ (all rows when the geometry or mode changed)."""
    if (previous is None or previous.mode != current.mode
            or previous.glyphs.shape != current.glyphs.shape):
        return list(range(current.rows))
    diff = ((previous.glyphs != current.glyphs) | (previous.fg != current.fg)
            | (previous.bg != current.bg)).any(axis=1)
    return [int(i) for i in np.flatnonzero(diff)]


def row_runs(keys: np.ndarray) -> tuple[list[int], list[int]]:
    """Start and end of each run of equal keys in one row (vectorised boundaries)."""
    boundaries = (np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()
    return [0, *boundaries], [*boundaries, int(keys.shape[0])]


def sgr(mode: str, fg: int, bg: int) -> str:
    """The SGR escape selecting one cell's colours (empty in mono)."""
    if mode == "truecolor":
        return (f"\x1b[38;2;{fg >> 16};{(fg >> 8) & 255};{fg & 255};"
                f"48;2;{bg >> 16};{(bg >> 8) & 255};{bg & 255}m")
    if mode == "256":
        return f"\x1b[38;5;{fg};48;5;{bg}m"
    return ""


def ansi_rows(cells: Cells, rows: list[int] | None = None, *, x: int = 0, y: int = 0) -> list[str]:
    """What a terminal is sent to redraw these rows at (x, y): a cursor move per row, then one
    colour escape + text + reset per run of equal colours (as Textual writes segments)."""
    out: list[str] = []
    keys = cells.style_keys()
    for row in range(cells.rows) if rows is None else rows:
        text = "".join(map(chr, cells.glyphs[row].tolist()))
        parts = [f"\x1b[{y + row + 1};{x + 1}H"]
        if cells.mode == "mono":
            parts.append(text)
        else:
            row_keys = keys[row]
            starts, ends = row_runs(row_keys)
            for start, end in zip(starts, ends, strict=True):
                fg, bg = split_style_key(cells.mode, int(row_keys[start]))
                parts.append(f"{sgr(cells.mode, fg, bg)}{text[start:end]}\x1b[0m")
        out.append("".join(parts))
    return out


def ansi_bytes(cells: Cells, rows: list[int] | None = None) -> int:
    """Bytes written to the terminal to redraw these rows (all rows by default)."""
    return sum(len(row.encode("utf-8")) for row in ansi_rows(cells, rows))
