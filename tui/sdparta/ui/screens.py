"""Screens pushed over the call (the call keeps running underneath)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

#: (keys, what they do); the app's BINDINGS are the source of truth, this is how they are explained.
KEYS_HELP = [
    ("m", "mute / unmute the microphone"),
    ("v", "camera on / off"),
    ("tab, n", "focus the next participant"),
    ("shift+tab, p", "focus the previous participant"),
    ("i", "show / hide the ICE panel of the focused participant"),
    ("c, /", "type a chat message (enter sends, escape leaves the input)"),
    ("d", "dump the focused participant's timeline and stats as JSON"),
    ("r", "restart ICE with the focused participant (re-gathers candidates, keeps the call)"),
    ("?", "this help (escape closes)"),
    ("ctrl+q", "leave the call (works everywhere)"),
]


class HelpScreen(ModalScreen[None]):
    """Lists every key; any of escape, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table(title="sdparta keys", show_header=False, box=None, padding=(0, 2, 0, 0))
        for key, what in KEYS_HELP:
            table.add_row(Text(key, style="bold"), what)
        yield Static(table, id="help")
