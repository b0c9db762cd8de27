"""``sdparta demo``: a portal on 127.0.0.1, two bot peers and the app, torn down on quit.

The portal and bots are child processes started here and stopped by PID on exit (also on errors
and Ctrl+C), so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sdparta.commands.join import join
from sdparta.config import CallFlags

DEMO_TONES = (440.0, 660.0)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def demo_room(workdir: Path, bots: int = 2) -> Iterator[tuple[str, str]]:
    """Yield (portal URL, room name) with a portal and ``bots`` bot peers running."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        portal = subprocess.Popen(
            [sys.executable, "-m", "sdparta", "portal", "--host", "127.0.0.1", "--port", "0",
             "--data", str(workdir / "portal.sqlite3")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        children.append(portal)
        assert portal.stdout is not None
        url = portal.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError("the demo portal did not start (is the port range exhausted?)")
        room = f"demo-{secrets.token_hex(4)}"
        for i in range(bots):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "sdparta", "bot", room, "--portal", url, "--name", f"demo-bot-{i + 1}",
                 "--audio", f"tone:{DEMO_TONES[i % len(DEMO_TONES)]}", "--video", "pattern",
                 "--report", str(workdir / f"bot{i + 1}.json")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        yield url, room
    finally:
        for child in reversed(children):
            _stop(child)


def run(args: argparse.Namespace) -> int:
    """Start the demo room and open the app in it, as ``sdparta join ROOM --portal URL --name you
    --video pattern`` would (``--video-mode`` and ``--fps`` pass through)."""
    with tempfile.TemporaryDirectory(prefix="sdparta-demo-") as tmp, demo_room(Path(tmp)) as (url, room):
        print(f"demo: portal {url}, room {room}", flush=True)
        return join(room, CallFlags(portals=[url], name="you", video="pattern", video_mode=args.video_mode,
                                    fps=args.fps or None))
