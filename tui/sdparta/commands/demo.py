"""``sdparta demo``: a portal on 127.0.0.1, two bot peers and the app, torn down on quit.

The portal and bots are child processes started here and stopped by PID on exit — after ctrl+q,
on errors, and on SIGTERM or SIGHUP (the terminal closed): outside the app those signals raise
:class:`Leave` in the main thread so every ``finally`` runs; inside it, the app leaves as on ctrl+q
(``run_join_app``). The temporary directory (portal database, bot reports) goes with them.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from sdparta.commands.join import join
from sdparta.config import CallFlags
from sdparta.engine.leaving import LEAVE_DEADLINE_S, LEAVE_SIGNALS, cleanup_on_forced_exit, detach_from_terminal

DEMO_TONES = (440.0, 660.0)
#: The demo's own participant plays a tone of its own (there may be no microphone), so `m` works.
OWN_TONE = "tone:550"
CHILD_STOP_S = LEAVE_DEADLINE_S + 1.0  # a bot gets this long to say bye before it is killed


class Leave(BaseException):
    """SIGTERM/SIGHUP arrived while the app was not running: unwind, cleaning up on the way."""


class _SignalGuard:
    """Turns SIGTERM/SIGHUP into :class:`Leave` in the main thread until the cleanup starts (a second
    signal must not cut the cleanup short); restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.cleaning = False
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            detach_from_terminal()
        if not self.cleaning:
            self.cleaning = True
            raise Leave(signum)

    def __enter__(self) -> _SignalGuard:
        self._previous = {sig: signal.signal(sig, self._handler) for sig in LEAVE_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _stop_all(children: list[subprocess.Popen[bytes]], timeout: float = CHILD_STOP_S) -> None:
    """SIGTERM each (they leave: bye, presence removed), wait for all together, SIGKILL the rest."""
    for proc in children:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in children:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


@contextlib.contextmanager
def demo_room(workdir: Path, bots: int = 2, guard: _SignalGuard | None = None) -> Iterator[tuple[str, str]]:
    """Yield (portal URL, room name) with a portal and ``bots`` bot peers running."""
    bot_procs: list[subprocess.Popen[bytes]] = []
    portal: list[subprocess.Popen[bytes]] = []

    def stop_children(bot_timeout: float = CHILD_STOP_S) -> None:  # bots first: their byes need the portal
        _stop_all(bot_procs, timeout=bot_timeout)
        _stop_all(portal, timeout=min(bot_timeout, 5.0))

    with cleanup_on_forced_exit(lambda: stop_children(2.0)):  # the exit is late already: be quick
        try:
            portal.append(subprocess.Popen(
                [sys.executable, "-m", "sdparta", "portal", "--host", "127.0.0.1", "--port", "0",
                 "--data", str(workdir / "portal.sqlite3")],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            ))
            assert portal[0].stdout is not None
            url = portal[0].stdout.readline().decode().strip()
            if not url.startswith("http"):
                raise RuntimeError("the demo portal did not start (is the port range exhausted?)")
            room = f"demo-{secrets.token_hex(4)}"
            for i in range(bots):
                echo = ["--echo-chat"] if i == 0 else []  # one bot answers chat: try `c` in the demo
                bot_procs.append(subprocess.Popen(
                    [sys.executable, "-m", "sdparta", "bot", room, "--portal", url, "--name", f"demo-bot-{i + 1}",
                     "--audio", f"tone:{DEMO_TONES[i % len(DEMO_TONES)]}", "--video", "pattern",
                     "--report", str(workdir / f"bot{i + 1}.json"), *echo],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
            yield url, room
        finally:
            if guard is not None:
                guard.cleaning = True
            stop_children()
            if portal and portal[0].stdout is not None:
                portal[0].stdout.close()


def run(args: argparse.Namespace) -> int:
    """Start the demo room and open the app in it, as ``sdparta join ROOM --portal URL --name you
    --video pattern --audio tone:550`` would (``--video-mode`` and ``--fps`` pass through)."""
    with _SignalGuard() as guard:
        tmp = Path(tempfile.mkdtemp(prefix="sdparta-demo-"))

        def remove_tmp() -> None:
            shutil.rmtree(tmp, ignore_errors=True)

        try:
            with cleanup_on_forced_exit(remove_tmp), demo_room(tmp, guard=guard) as (url, room):
                with contextlib.suppress(OSError):
                    print(f"demo: portal {url}, room {room}", flush=True)
                return join(room, CallFlags(portals=[url], name="you", video="pattern", audio=OWN_TONE,
                                            video_mode=args.video_mode, fps=args.fps or None))
        except Leave:
            return 0
        finally:
            guard.cleaning = True
            remove_tmp()
