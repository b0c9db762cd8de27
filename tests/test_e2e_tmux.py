"""End to end in a real terminal: `sdparta demo` in tmux at 120×40, chat, then at 80×24 (hints kept,
the ICE panel on the whole screen), quit with ctrl+q."""

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
        # Enter gave the keys back to the call: this c opens the chat again instead of being typed
        wait_screen(session, lambda s: "press c to chat" in s, 15, "the idle placeholder after sending")
        subprocess.run(["tmux", "send-keys", "-t", session, "c"], check=True)
        wait_screen(session, lambda s: "Enter sends" in s, 15, "the typing placeholder")
        subprocess.run(["tmux", "send-keys", "-t", session, "second", "Enter"], check=True)
        wait_screen(session, lambda s: "you: second" in s, 15, "the second line, no stray c")

        subprocess.run(["tmux", "resize-window", "-t", session, "-x", "80", "-y", "24"], check=True)
        screen = wait_screen(session, lambda s: s.splitlines()[-1].rstrip().endswith("? help · ^q quit")
                             and len(s.splitlines()[0]) <= 80, 30, "the hints kept at 80×24")
        assert screen.count("connected") >= 2
        subprocess.run(["tmux", "send-keys", "-t", session, "i"], check=True)
        screen = wait_screen(session, lambda s: "now: rtt" in s and "PgDn" in s, 30, "the ICE panel at 80×24")
        assert "┏ ┏┓" not in screen and "participants" not in screen, "tiles hidden, not squeezed"
        subprocess.run(["tmux", "send-keys", "-t", session, "i"], check=True)
        (tmp_path / "screen-80x24.txt").write_text(screen)
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
