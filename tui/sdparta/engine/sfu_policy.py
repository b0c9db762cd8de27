"""When a room moves onto its SFU and back: one rule every member applies to the same presence list.

- **Up** when the room (every session in the presence list, us included) has ``at`` members or more.
- **Down** only after it has had fewer than ``at`` members for ``hold_s`` seconds without a break: a
  room that loses a member for a moment (a restart, a reconnect) stays where it is, and one hovering
  at the threshold moves at most once per ``hold_s``.
- A member that failed to reach the SFU waits (``retry_after``) before it tries again, longer each time.

Members may see the presence list a moment apart, so for a while some are on the SFU and some are not;
the engine never lets that split the room: each pair keeps its mesh media until the other side says it
receives us through the SFU (engine/sfu_link.py), so a member that stays on the mesh is still heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SfuPolicy"]

RETRY_FIRST_S = 15.0
RETRY_MAX_S = 300.0


@dataclass
class SfuPolicy:
    at: int  # 0: never
    hold_s: float
    _small_since: float | None = field(default=None, init=False)
    _retry_at: float = field(default=0.0, init=False)
    _retry_delay: float = field(default=RETRY_FIRST_S, init=False)

    def want_sfu(self, now: float, size: int, on_sfu: bool) -> bool:
        """Should we be on the SFU now, given the room's size and where we are?"""
        if self.at <= 0:
            return False
        if not on_sfu:
            self._small_since = None
            return size >= self.at and now >= self._retry_at
        if size >= self.at:
            self._small_since = None
            return True
        if self._small_since is None:
            self._small_since = now
        return now - self._small_since < self.hold_s

    def failed(self, now: float) -> float:
        """The SFU could not be reached or was lost: wait before trying again. Returns the wait."""
        delay = self._retry_delay
        self._retry_at = now + delay
        self._retry_delay = min(RETRY_MAX_S, delay * 2)
        return delay

    def succeeded(self) -> None:
        self._retry_delay = RETRY_FIRST_S
