"""Help for a new user: what sdparta is in one line, help text on every option of every command, and
a bare `sdparta` that shows the help and where to start (issue 9)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sdparta.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subparser below it (skydb get/set included)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_command_has_help() -> None:
    missing = []
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{parser.prog} {choice.dest}" for choice in action._choices_actions
                            if not (choice.help or "").strip()]
        if parser.prog != "sdparta" and not (parser.description or "").strip():
            missing.append(f"{parser.prog} (no description)")
    assert missing == []


def test_the_help_says_what_sdparta_is_and_where_to_start(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    description = build_parser().description or ""
    assert "\n" not in description and len(description) < 80 and "video calls in the terminal" in description
    assert out.split("\n\n")[1] == description  # fits on one line of an 80-column terminal
    assert "argument parsing" not in out and "entry point" not in out
    assert "sdparta demo" in out and "sdparta join ROOM" in out


@pytest.mark.parametrize(("command", "words"), [
    (["demo"], ["--video-mode", "how video tiles are drawn", "--fps", "frames per second"]),
    (["config"], ["--show", "print the settings"]),
    (["join"], ["room", "the room's name", "camera:/dev/videoN", "tone:HZ (20–20000)"]),
    (["skydb", "get"], ["--portal", "default: the portals of the config file"]),
])
def test_command_help_explains_the_options(command: list[str], words: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for word in words:
        assert word in out


def test_a_bare_sdparta_prints_the_help_and_suggests_the_demo() -> None:
    done = subprocess.run([sys.executable, "-m", "sdparta"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "usage: sdparta" in done.stderr and "commands:" in done.stderr and "join" in done.stderr
    assert "start with `sdparta demo`" in done.stderr
    assert "required: command" not in done.stderr


def test_a_mistake_is_one_line_pointing_at_the_help() -> None:
    done = subprocess.run([sys.executable, "-m", "sdparta", "join", "room", "--no-such-flag"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["sdparta join: unrecognized arguments: --no-such-flag "
                                        "(see sdparta join --help)"]
