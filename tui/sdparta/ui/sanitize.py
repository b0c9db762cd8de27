"""Text that came from other peers (names, chat, candidates, notices) goes through here first."""

from __future__ import annotations


def safe(text: str) -> str:
    """Drop control characters: names, chat and candidates come from other peers, and an escape
    sequence in them must never reach the terminal."""
    return text if text.isprintable() else "".join(ch for ch in text if ch.isprintable())
