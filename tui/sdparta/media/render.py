"""Video frame → terminal cells, in numpy only (no rich/textual here).

Two pixels per cell with the upper half block: the foreground colour is the top pixel, the
background the bottom one.  Colours are quantized here, once per frame, so the UI's style cache
stays small: truecolor keeps 6 bits per channel, ``256`` maps to the xterm colour cube, ``mono``
uses an ASCII luminance ramp and no colour at all (for dumb terminals and thin SSH links).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("truecolor", "256", "mono")
HALF_BLOCK = 0x2580  # ▀
MONO_RAMP = np.array([ord(c) for c in " .:-=+*#%@"], dtype=np.uint32)
NO_COLOUR = -1


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


def _sample(rgb: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Nearest-neighbour resize to (rows*2, cols) pixels: cheap and good enough for a preview."""
    height, width = rgb.shape[:2]
    ys = (np.arange(rows * 2) * height) // (rows * 2)
    xs = (np.arange(cols) * width) // cols
    return rgb[ys[:, None], xs[None, :]]


def _cube_index(pixels: np.ndarray) -> np.ndarray:
    """xterm-256 colour cube index (16 + 36r + 6g + b) for uint8 RGB pixels."""
    levels = (pixels.astype(np.uint16) * 5 + 127) // 255
    return (16 + 36 * levels[..., 0] + 6 * levels[..., 1] + levels[..., 2]).astype(np.int32)


def _pack(pixels: np.ndarray) -> np.ndarray:
    quantized = (pixels & 0xFC).astype(np.int32)
    return (quantized[..., 0] << 16) | (quantized[..., 1] << 8) | quantized[..., 2]


def render_halfblock(rgb: np.ndarray, cols: int, rows: int, mode: str = "truecolor") -> Cells:
    """Render an H×W×3 uint8 RGB frame into ``cols`` × ``rows`` cells."""
    if mode not in MODES:
        raise ValueError(f"unknown video mode {mode!r} (choose from {', '.join(MODES)})")
    cols, rows = max(1, cols), max(1, rows)
    pixels = _sample(rgb, cols, rows)
    top, bottom = pixels[0::2], pixels[1::2]
    if mode == "mono":
        luma = (pixels[..., 0].astype(np.uint16) * 77 + pixels[..., 1].astype(np.uint16) * 150
                + pixels[..., 2].astype(np.uint16) * 29) >> 8
        cell_luma = (luma[0::2] + luma[1::2]) // 2
        glyphs = MONO_RAMP[(cell_luma * (len(MONO_RAMP) - 1) + 127) // 255]
        empty = np.full((rows, cols), NO_COLOUR, dtype=np.int32)
        return Cells(mode, glyphs, empty, empty.copy())
    glyphs = np.full((rows, cols), HALF_BLOCK, dtype=np.uint32)
    if mode == "256":
        return Cells(mode, glyphs, _cube_index(top), _cube_index(bottom))
    return Cells(mode, glyphs, _pack(top), _pack(bottom))


def changed_rows(previous: Cells | None, current: Cells) -> list[int]:
    """Rows whose glyphs or colours differ (all rows when the geometry or mode changed)."""
    if (previous is None or previous.mode != current.mode
            or previous.glyphs.shape != current.glyphs.shape):
        return list(range(current.rows))
    diff = ((previous.glyphs != current.glyphs) | (previous.fg != current.fg)
            | (previous.bg != current.bg)).any(axis=1)
    return [int(i) for i in np.flatnonzero(diff)]


def _sgr(mode: str, fg: int, bg: int) -> str:
    if mode == "truecolor":
        return (f"\x1b[38;2;{fg >> 16};{(fg >> 8) & 255};{fg & 255};"
                f"48;2;{bg >> 16};{(bg >> 8) & 255};{bg & 255}m")
    if mode == "256":
        return f"\x1b[38;5;{fg};48;5;{bg}m"
    return ""


def ansi_rows(cells: Cells, rows: list[int] | None = None) -> list[str]:
    """The escape sequences a terminal is sent for these rows (style emitted only on change)."""
    out = []
    for y in range(cells.rows) if rows is None else rows:
        parts: list[str] = []
        last: tuple[int, int] | None = None
        glyphs, fg, bg = cells.glyphs[y], cells.fg[y], cells.bg[y]
        for x in range(cells.cols):
            style = (int(fg[x]), int(bg[x]))
            if style != last and cells.mode != "mono":
                parts.append(_sgr(cells.mode, *style))
                last = style
            parts.append(chr(int(glyphs[x])))
        parts.append("\x1b[0m\r\n" if cells.mode != "mono" else "\r\n")
        out.append("".join(parts))
    return out


def ansi_bytes(cells: Cells, rows: list[int] | None = None) -> int:
    """Bytes written to the terminal for these rows (all by default)."""
    return sum(len(row.encode("utf-8")) for row in ansi_rows(cells, rows))
