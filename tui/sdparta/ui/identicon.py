"""The identicon: what a participant without video (or you, without a camera) is shown as.

A symmetric randomart of the key fingerprint, so people can compare keys by eye as well as by the
fingerprint's text.
"""

from __future__ import annotations

import hashlib

from rich.segment import Segment
from rich.style import Style
from rich_pixels import Pixels
from textual.widgets import Static

IDENTICON_SIZE = 7  # cells per side; each cell is two columns wide so it looks square
IDENTICON_LEVELS = " .oO@"  # visit count 0, 1, 2, 3, ≥4


def identicon_grid(fingerprint: str, size: int = IDENTICON_SIZE, steps: int = 32) -> list[str]:
    """A left-right symmetric randomart of a key fingerprint (like OpenSSH's "drunken bishop").

    The bishop starts in the middle of the left half and moves diagonally, two bits of the
    fingerprint's hash per step; each cell shows how often it was visited; the right half mirrors
    the left. Symmetry makes it look like a face or a bug, which people remember and compare well
    out of band."""
    digest = hashlib.sha256(fingerprint.encode()).digest()
    bits = int.from_bytes(digest[3:], "big")
    half = (size + 1) // 2
    visits = [[0] * half for _ in range(size)]
    x, y = half - 1, size // 2
    for i in range(steps):
        step = (bits >> (2 * i)) & 3
        x = min(half - 1, max(0, x + (1 if step & 1 else -1)))
        y = min(size - 1, max(0, y + (1 if step & 2 else -1)))
        visits[y][x] += 1
    rows = []
    for line in visits:
        left = [IDENTICON_LEVELS[min(len(IDENTICON_LEVELS) - 1, n)] for n in line]
        rows.append("".join(left + left[: size - half][::-1]))
    return rows


def identicon_colours(fingerprint: str) -> dict[str, str]:
    """Four shades of one hue taken from the fingerprint's hash, dim to bright per visit level."""
    digest = hashlib.sha256(fingerprint.encode()).digest()
    r, g, b = digest[0], digest[1], digest[2]
    top = max(r, g, b, 1)
    bright = [min(255, 80 + c * 175 // top) for c in (r, g, b)]
    return {level: "#{:02x}{:02x}{:02x}".format(*(c * (i + 2) // 5 for c in bright))
            for i, level in enumerate(IDENTICON_LEVELS[1:])}


MONO_SHADES = dict(zip(IDENTICON_LEVELS[1:], "░▒▓█", strict=True))


def identicon(fingerprint: str, size: int = IDENTICON_SIZE, *, mono: bool = False) -> Pixels:
    """The identicon as rich-pixels, two columns per cell so cells look square; in mono, shade
    glyphs instead of colours."""
    mapping = {" ": Segment("  ")}
    if mono:
        mapping.update({level: Segment(shade * 2) for level, shade in MONO_SHADES.items()})
    else:
        mapping.update({level: Segment("██", Style(color=colour))
                        for level, colour in identicon_colours(fingerprint).items()})
    return Pixels.from_ascii("\n".join(identicon_grid(fingerprint, size)), mapping)


class Identicon(Static):
    """The identicon of a participant without video (or of yourself without a camera)."""

    def __init__(self, fingerprint: str, *, mono: bool = False, **kwargs: object) -> None:
        super().__init__(identicon(fingerprint, mono=mono), **kwargs)  # type: ignore[arg-type]
        self.fingerprint = fingerprint
        self.mono = mono

    def set_fingerprint(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            self.fingerprint = fingerprint
            self.update(identicon(fingerprint, mono=self.mono))
