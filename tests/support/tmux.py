"""Run a real `sdparta` command in a real terminal (tmux), read its screen, signal it, close it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SDPARTA = Path(sys.executable).with_name("sdparta")


@dataclass
class Terminal:
    """One tmux session whose pane process *is* the sdparta command (the shell ``exec``s it), so the
    pane's PID is sdparta's and its exit status stays readable after it ends (remain-on-exit)."""

    name: str

    def _pane(self, fmt: str) -> str:
        return subprocess.run(["tmux", "list-panes", "-t", self.name, "-F", fmt], capture_output=True,
                              text=True).stdout.strip()

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-t", self.name, "-p"], capture_output=True,
                              text=True).stdout

    def wait_screen(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; screen:\n{screen}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    @property
    def pid(self) -> int:
        return int(self._pane("#{pane_pid}").split()[0])

    def exit_status(self) -> int | None:
        """The command's exit status once it has ended (None while it runs)."""
        dead, _, status = self._pane("#{pane_dead} #{pane_dead_status}").partition(" ")
        return int(status) if dead == "1" and status.strip() else None

    def close(self) -> None:
        """Close the terminal as a window manager would: the pty hangs up, its processes get SIGHUP."""
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def open_terminal(cwd: Path, name: str, argv: list[str], env: dict[str, str] | None = None,
                  size: tuple[int, int] = (160, 45)) -> Terminal:
    """Start ``sdparta ARGV…`` in ``cwd`` in a fresh tmux session of ``size`` columns × rows."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    command = " ".join(shlex.quote(a) for a in [str(SDPARTA), *argv])
    session = f"sdparta-{name}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]),
                    f"cd {shlex.quote(str(cwd))} && exec env {exports} {command}"], check=True)
    subprocess.run(["tmux", "set-option", "-t", session, "remain-on-exit", "on"], capture_output=True)
    return Terminal(session)
