"""Background loops that must never end silently: a crash is logged, reported and the loop restarted.

Used by the room session (poll, push, re-announce) and the engine (publisher, stats, heartbeat): a
loop that dies of a bug would otherwise stop presence, polling or the UI's updates without a word.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: A crashed loop is restarted after this long (a loop that crashes at once does not spin).
RESTART_AFTER_S = 1.0


async def supervised(name: str, loop: Callable[[], Awaitable[None]], on_crash: Callable[[str, str], None],
                     *, stopping: Callable[[], bool] = lambda: False,
                     restart_after: float = RESTART_AFTER_S) -> None:
    """Run ``loop()`` until it returns or ``stopping()``; on a crash call ``on_crash(name, error)``,
    wait ``restart_after`` and run it again. Cancellation passes through."""
    while not stopping():
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s loop crashed; restarting it in %.0f s", name, restart_after)
            try:
                on_crash(name, f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("reporting the crash of the %s loop failed", name)
            await asyncio.sleep(restart_after)
