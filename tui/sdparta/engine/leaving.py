"""Leaving on SIGTERM or SIGHUP (the terminal closed) as on ctrl+q: bye sent, presence removed,
nothing left behind — bounded in time.

Without this, a signal ended the process at once: the others kept a `reconnecting` ghost until the
presence record went stale, and the demo left its temporary directory behind. The pieces:

- :func:`detach_from_terminal`: after SIGHUP the terminal is gone, so reads and writes on it fail
  (EIO) — a UI that keeps drawing, a logger, a last message on stderr. Pointing stdin, stdout and
  stderr at /dev/null makes every later read or write harmless.
- :class:`HangupSafeStream`: the UI's terminal output, so that the UI's own writes cannot fail
  on a terminal that went away before the SIGHUP handler ran.
- :class:`SignalLeave`: the leave a signal starts runs on a thread of its own (``Call.stop`` with a
  deadline), so it completes even if the main thread is stuck in a UI writing to a dead terminal;
  if the main thread has not finished the exit within a grace period after that, the process runs
  the registered cleanups (:func:`cleanup_on_forced_exit`) and exits anyway.

Used by ``run_join_app`` (join and demo), the bot and the demo; nothing here knows about the UI.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

log = logging.getLogger(__name__)

#: The signals treated as "leave": kill's default, and the terminal going away.
LEAVE_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
#: The engine gets this long (seconds) to say bye and take its presence record back…
LEAVE_DEADLINE_S = 5.0
#: … and the rest of the exit (UI teardown, the demo's cleanup) this long after that.
EXIT_GRACE_S = 3.0

#: What writing to a terminal that went away fails with.
HANGUP_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.EPIPE})

_cleanups: list[Callable[[], None]] = []
_cleanups_lock = threading.Lock()


def detach_from_terminal() -> None:
    """Point stdin, stdout and stderr at /dev/null (the terminal hung up: using it fails)."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


class HangupSafeStream:
    """A terminal stream whose writes are dropped, not raised, once the terminal has gone (EIO).

    Textual writes the screen on a thread of its own through a short queue: one EIO kills that
    thread, and the next writes block the UI for good (observed: the kernel's SIGCONT after the
    hangup makes Textual redraw before any SIGHUP handler can run). Everything else passes through."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            if exc.errno not in HANGUP_ERRNOS:
                raise
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            if exc.errno not in HANGUP_ERRNOS:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def cleanup_on_forced_exit(fn: Callable[[], None]) -> Iterator[None]:
    """While inside, ``fn`` runs if a signalled leave has to force the exit (the main thread, which
    would have run the normal cleanup, did not get there in time). ``fn`` must be safe to run from
    another thread and more than once."""
    with _cleanups_lock:
        _cleanups.append(fn)
    try:
        yield
    finally:
        with _cleanups_lock:
            if fn in _cleanups:
                _cleanups.remove(fn)


def force_exit(code: int = 0) -> None:
    """Run the registered cleanups (newest first) and end the process now."""
    with _cleanups_lock:
        pending = list(reversed(_cleanups))
    for fn in pending:
        try:
            fn()
        except Exception:
            log.exception("cleanup on forced exit failed")
    os._exit(code)


class SignalLeave:
    """What the first SIGTERM/SIGHUP starts: ``stop(deadline)`` on its own thread, then a watchdog.

    ``done()`` tells it the main thread finished the exit, so no forced exit is needed."""

    def __init__(self, stop: Callable[[float], None], *, deadline: float = LEAVE_DEADLINE_S,
                 grace: float = EXIT_GRACE_S) -> None:
        self._stop, self.deadline, self.grace = stop, deadline, grace
        self.signum: int | None = None
        self.left = threading.Event()  # the engine's leave is over (said bye, or ran out of time)
        self._done = threading.Event()
        self._lock = threading.Lock()

    def trigger(self, signum: int) -> bool:
        """Start leaving (the first signal only: True); later signals change nothing."""
        with self._lock:
            if self.signum is not None:
                return False
            self.signum = signum
        if signum == signal.SIGHUP:
            detach_from_terminal()
        threading.Thread(target=self._leave, name="sdparta-leave", daemon=True).start()
        return True

    def _leave(self) -> None:
        try:
            self._stop(self.deadline)
        except Exception:
            log.exception("leaving failed")
        finally:
            self.left.set()
        if not self._done.wait(self.grace):
            log.warning("exit did not finish %.0f s after leaving: forcing it", self.grace)
            force_exit(0)

    def done(self) -> None:
        self._done.set()
