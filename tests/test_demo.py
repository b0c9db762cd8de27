"""`sdparta demo`: every key can be tried (its own participant plays a tone, a bot answers chat), and
closing it any way — ctrl+q, SIGTERM, closing the terminal (SIGHUP) — leaves nothing behind: no
child process (checked by PID), no `sdparta-demo-*` directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdparta.commands.bot import ECHO_BURST, ECHO_EVERY_S, ECHO_MAX_CHARS, ChatEcho
from sdparta.engine.state import ChatMessage
from support.procs import wait_for
from support.tmux import Terminal, open_terminal

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian package tmux)")
EXIT_BOUND_S = 15.0  # signal → demo, bots and portal all ended (bots say bye first, then the portal stops)


# ---------------------------------------------------------------------- --echo-chat rules
def _line(text: str, sender: str = "you", own: bool = False, t: float = 0.0) -> ChatMessage:
    return ChatMessage(t, sender, "aaaa:bbbb:cccc:dddd", text, own=own)


def test_echo_answers_new_lines_once_never_its_own_or_an_echo() -> None:
    now = [0.0]
    echo = ChatEcho("demo-bot-1", clock=lambda: now[0])
    chat = (_line("hello", t=1), _line("mine", sender="demo-bot-1", own=True, t=2),
            _line("heard: hello", sender="demo-bot-2", t=3))
    assert echo.replies(chat) == ["heard: hello"]
    assert echo.replies(chat) == []  # nothing new
    now[0] += 10
    chat += (_line("x" * (ECHO_MAX_CHARS + 50), t=4),)
    (reply,) = echo.replies(chat)
    assert reply.startswith("heard: x") and len(reply) == len("heard: ") + ECHO_MAX_CHARS
    assert reply.endswith("…")


def test_echo_is_rate_limited() -> None:
    now = [100.0]
    echo = ChatEcho("bot", clock=lambda: now[0])
    flood = tuple(_line(f"line {i}", t=i) for i in range(10))
    assert len(echo.replies(flood)) == ECHO_BURST  # the rest dropped, not queued
    now[0] += ECHO_BURST * ECHO_EVERY_S
    assert echo.replies((*flood, _line("later", t=11))) == ["heard: later"]


def test_two_echoing_bots_cannot_loop() -> None:
    """Each bot's echo starts with "heard: ", which the other never echoes."""
    a, b = ChatEcho("a"), ChatEcho("b")
    chat_a: tuple[ChatMessage, ...] = (_line("hi", sender="human"),)
    chat_b: tuple[ChatMessage, ...] = chat_a
    for _ in range(5):
        from_a = tuple(_line(text, sender="a") for text in a.replies(chat_a))
        from_b = tuple(_line(text, sender="b") for text in b.replies(chat_b))
        chat_a, chat_b = chat_a + from_b, chat_b + from_a
    assert len(chat_a) == 2 and len(chat_b) == 2  # one echo each of the human's line, nothing more


# ---------------------------------------------------------------------- the demo in a terminal
def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def _start_demo(tmp_path: Path) -> tuple[Terminal, Path]:
    tmpdir = tmp_path / "tmp"  # where the demo makes its sdparta-demo-* directory
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    term = open_terminal(tmp_path, "demo", ["demo"], env=env)
    term.wait_screen(lambda s: s.count("connected") >= 2 and "demo-bot-1" in s and "demo-bot-2" in s, 90,
                     "the demo with two connected bots")
    return term, tmpdir


def _assert_nothing_left(pids: list[int], tmpdir: Path, since: float) -> None:
    wait_for(lambda: all(_ended(p) for p in pids), EXIT_BOUND_S - (time.monotonic() - since),
             "the demo, its bots and its portal ended", diagnostics=lambda: str([p for p in pids if not _ended(p)]))
    assert list(tmpdir.iterdir()) == [], "the demo left its temporary directory behind"


@pytest.mark.integration
@needs_tmux
@pytest.mark.parametrize("how", ["SIGTERM", "close the terminal"])
def test_demo_closed_by_a_signal_leaves_nothing_behind(tmp_path: Path, how: str) -> None:
    term, tmpdir = _start_demo(tmp_path)
    try:
        pid = term.pid
        pids = [pid, *_children(pid)]
        assert len(pids) == 4, f"demo, portal and two bots expected: {pids}"
        assert [p.name[:13] for p in tmpdir.iterdir()] == ["sdparta-demo-"]
        since = time.monotonic()
        if how == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
        else:
            term.close()
        _assert_nothing_left(pids, tmpdir, since)
    finally:
        term.close()


def _say_in_chat(term: Terminal, text: str) -> None:
    """`c`, the text, Enter — once the line shows in the log (the input may take a moment to get the
    focus on a busy machine: keys typed before that are commands, so try again)."""
    for _attempt in range(3):
        term.keys("c")
        time.sleep(0.3)
        term.keys(text, "Enter")
        try:
            term.wait_screen(lambda s: f"you: {text}" in s, 8, "our chat line")
            return
        except AssertionError:
            term.keys("Escape")
    raise AssertionError(f"could not send a chat line; screen:\n{term.screen()}")


@pytest.mark.integration
@needs_tmux
def test_every_key_can_be_tried_in_the_demo(tmp_path: Path) -> None:
    """`m` mutes the demo's own tone (not "no microphone"), a chat line gets an answer from
    demo-bot-1, and ctrl+q leaves with nothing left behind."""
    term, tmpdir = _start_demo(tmp_path)
    try:
        pid = term.pid
        pids = [pid, *_children(pid)]
        term.keys("m")
        term.wait_screen(lambda s: "microphone muted" in s, 10, "the mute notice")
        assert "no microphone" not in term.screen()
        _say_in_chat(term, "hello bots")
        term.wait_screen(lambda s: "demo-bot-1: heard: hello bots" in s, 20, "demo-bot-1's answer in the chat")
        term.keys("Escape")
        since = time.monotonic()
        term.keys("C-q")
        _assert_nothing_left(pids, tmpdir, since)
    finally:
        term.close()


@pytest.mark.integration
def test_a_signal_outside_the_app_still_cleans_up(tmp_path: Path) -> None:
    """SIGTERM while the app is not running (starting, or tearing down): the demo unwinds through its
    cleanup — bots and portal stopped by PID, the temporary directory removed — and exits 0."""
    script = textwrap.dedent("""
        import os, signal, sys, time
        from types import SimpleNamespace
        from sdparta.commands import demo

        def _ppid(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return None

        def no_app(room, flags):
            mine = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == os.getpid()]
            print("children", *mine, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            return 5

        demo.join = no_app
        sys.exit(demo.run(SimpleNamespace(video_mode=None, fps=None)))
    """)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmpdir)})
    assert proc.returncode == 0, proc.stderr
    children = [int(x) for line in proc.stdout.splitlines() if line.startswith("children")
                for x in line.split()[1:]]
    assert len(children) == 3, proc.stdout
    assert all(_ended(p) for p in children)
    assert list(tmpdir.iterdir()) == []
