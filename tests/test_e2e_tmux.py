"""End to end in a real terminal: `sdparta demo` in tmux at 120×40, chat, quit with ctrl+q."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian package tmux)")]


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True,
                          check=True).stdout


def wait_screen(session: str, predicate, timeout: float, what: str) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if predicate(screen):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")


def test_demo_in_tmux(tmp_path: Path) -> None:
    session = f"sdparta-e2e-{int(time.time())}"
    done = tmp_path / "exit-code"
    sdparta = Path(sys.executable).with_name("sdparta")
    command = f"cd {tmp_path} && {sdparta} demo; echo $? > {done}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        screen = wait_screen(session, lambda s: s.count("connected") >= 2 and "demo-bot-1" in s
                             and "demo-bot-2" in s and s.count("▀") > 200, 60, "two connected bots with video")
        assert "push" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "c"], check=True)
        time.sleep(0.3)
        subprocess.run(["tmux", "send-keys", "-t", session, "hello from tmux", "Enter"], check=True)
        screen = wait_screen(session, lambda s: "you: hello from tmux" in s, 15, "own chat line in the log")
        (tmp_path / "screen.txt").write_text(screen)
        subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"], check=True)
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), "the app did not exit after ctrl+q"
        assert done.read_text().strip() == "0"
        leftover = subprocess.run(["pgrep", "-f", f"sdparta-demo-.*|{tmp_path}"], capture_output=True, text=True)
        assert leftover.stdout.strip() == "", f"processes left behind: {leftover.stdout}"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
