"""The chat box: an input whose placeholder says whether keys go into it, the log, and news of
messages that arrive while the chat is out of sight.

Why the input says so much: while it has focus every letter is text, while it has not every
letter is a command (``c`` opens it, ``m`` mutes). The placeholder and the border say which, and
sending a message hands the keys back to the call, so a following ``c`` is never typed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from sdparta.engine.state import ChatMessage
from sdparta.ui.sanitize import safe

PLACEHOLDER_IDLE = "press c to chat"
PLACEHOLDER_TYPING = "type a message, Enter sends, Esc leaves"
TOAST_CHARS = 200  # an incoming message is shown in a toast up to this long
T = TypeVar("T")


def new_items(items: Sequence[T], last_seen: T | None) -> list[T]:
    """Items appended after ``last_seen`` in an append-only list that the engine trims at the front
    (so neither indices nor counts are stable)."""
    if last_seen is None:
        return list(items)
    for index in range(len(items) - 1, -1, -1):
        if items[index] == last_seen:
            return list(items[index + 1:])
    return list(items)  # everything we saw was trimmed away: all of it is new


class ChatInput(Input):
    """The chat's input line: its placeholder follows its focus."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(placeholder=PLACEHOLDER_IDLE, max_length=2000, **kwargs)  # type: ignore[arg-type]

    def on_focus(self, event: events.Focus) -> None:
        self.placeholder = PLACEHOLDER_TYPING

    def on_blur(self, event: events.Blur) -> None:
        self.placeholder = PLACEHOLDER_IDLE


def chat_line(message: ChatMessage, local_time: Callable[[float], time.struct_time]) -> Text:
    """``12:04 bot1: hello`` (own messages in cyan), remote strings sanitized."""
    line = Text(time.strftime("%H:%M ", local_time(message.t)), style="grey50")
    line.append(safe(message.from_name), style="bold cyan" if message.own else "bold")
    line.append(f": {safe(message.text)}")
    return line


def toast_text(incoming: Sequence[ChatMessage]) -> str:
    """One toast for the messages that arrived at once: the newest, and how many came with it."""
    last = incoming[-1]
    text = safe(last.text)
    if len(text) > TOAST_CHARS:
        text = text[: TOAST_CHARS - 1] + "…"
    more = f" (+{len(incoming) - 1} more)" if len(incoming) > 1 else ""
    return f"{safe(last.from_name)}: {text}{more}"


class UnreadChat:
    """Counts messages from others that arrived while the chat was out of sight (ICE panel on the
    whole screen, help screen open); seeing the chat again clears the count."""

    def __init__(self) -> None:
        self.count = 0

    def arrived(self, messages: Sequence[ChatMessage], visible: bool) -> list[ChatMessage]:
        """Note new messages; returns those worth a toast (from others, while out of sight)."""
        incoming = [m for m in messages if not m.own]
        if visible:
            self.count = 0
            return []
        self.count += len(incoming)
        return incoming

    def seen(self) -> bool:
        """The chat is in sight again: True when that cleared a count (the status bar changes)."""
        had, self.count = self.count, 0
        return had > 0


class ChatBox(Vertical):
    """The log above the input; ``show`` writes what is new and keeps the unread count."""

    def __init__(self, local_time: Callable[[float], time.struct_time], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.local_time = local_time
        self.unread = UnreadChat()
        self._last: ChatMessage | None = None

    def compose(self) -> ComposeResult:
        yield RichLog(id="chat-log", wrap=True, markup=False, max_lines=1000)
        yield ChatInput(id="chat-input")

    def show(self, chat: Sequence[ChatMessage], visible: bool) -> list[ChatMessage]:
        """Write the messages not written yet; returns those from others that arrived out of sight
        (``visible`` False), worth a toast."""
        fresh = new_items(chat, self._last)
        log = self.query_one("#chat-log", RichLog)
        for message in fresh:
            log.write(chat_line(message, self.local_time))
        if chat:
            self._last = chat[-1]
        return self.unread.arrived(fresh, visible) if fresh else []
