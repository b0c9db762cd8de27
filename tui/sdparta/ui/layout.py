"""How the screen is split at a given terminal size: what is shown beside what.

A pure function of the size, so 80×24, 120×40 and 200×60 are testable without an app; the app
turns the answer into classes on its main screen (``app.tcss`` says what each class hides).
"""

from __future__ import annotations

from dataclasses import dataclass

SELF_VIEW_MIN = (110, 30)  # below this the self view goes: two remote tiles beside it would be smaller
ICE_BESIDE_MIN = (140, 30)  # the ICE panel (64 columns) sits beside the tiles only from this size on
SHORT_HEIGHT = 30  # below this the chat box shrinks to two lines of log


@dataclass(frozen=True, slots=True)
class Layout:
    """What a terminal of this size shows."""

    self_view: bool  # the self tile (our own picture); without it our name and key are a text line
    ice_full: bool  # an open ICE panel takes the whole screen (tiles, list and chat hidden)
    short: bool  # the chat box is compact

    def classes(self, *, ice_open: bool, empty: bool) -> dict[str, bool]:
        """Screen classes for this layout (see app.tcss)."""
        return {"-no-self": not self.self_view, "-short": self.short, "-ice-open": ice_open,
                "-ice-full": ice_open and self.ice_full, "-empty": empty}


def choose_layout(width: int, height: int) -> Layout:
    """The layout for a ``width``×``height`` terminal."""
    return Layout(self_view=width >= SELF_VIEW_MIN[0] and height >= SELF_VIEW_MIN[1],
                  ice_full=width < ICE_BESIDE_MIN[0] or height < ICE_BESIDE_MIN[1],
                  short=height < SHORT_HEIGHT)
