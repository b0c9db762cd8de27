"""Mistakes on the command line are caught before anything starts: exit code 2, one line on stderr
saying what is wrong and how to fix it, no app, no engine, no portal contacted (issue 9)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdparta import cli


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file of the user's: only the flags decide."""
    monkeypatch.setenv("SDPARTA_CONFIG", str(tmp_path / "absent.toml"))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands that were run: a check that fails must leave this empty."""
    ran: list[str] = []

    def dispatch(args: object) -> int:
        ran.append(args.command)  # type: ignore[attr-defined]
        return 0

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    return ran


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """``sdparta ARGV`` in-process: (exit code, stderr lines)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors (a type or a choice)
        code = int(exc.code or 0)
    return code, capsys.readouterr().err.splitlines()


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], started: list[str]) -> str:
    """Assert exit 2, one stderr line naming the command, nothing started; return the line."""
    code, err = run(argv, capsys)
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"sdparta {argv[0]}: "), err
    assert started == []
    return err[0]


# ------------------------------------------------------------------ the issue's own examples
def test_a_tone_that_is_not_a_number(capsys: pytest.CaptureFixture[str], started: list[str]) -> None:
    line = refused(["join", "room", "--audio", "tone:abc"], capsys, started)
    assert "--audio tone:abc" in line and "not a number" in line and "tone:440" in line
    assert "could not convert" not in line


def test_an_empty_room_name(capsys: pytest.CaptureFixture[str], started: list[str]) -> None:
    for command in ("join", "bot"):
        line = refused([command, ""], capsys, started)
        assert "the room name is empty" in line
    assert "the room name is empty" in refused(["join", "   "], capsys, started)
    assert "characters long" in refused(["join", "r" * 5000], capsys, started)
    assert "control" in refused(["join", "a\x1b[2Jb"], capsys, started)


def test_an_unknown_video_source_is_not_silently_off(capsys: pytest.CaptureFixture[str], started: list[str]) -> None:
    line = refused(["join", "room", "--video", "webcam"], capsys, started)
    assert "--video webcam" in line and "camera, camera:/dev/videoN, pattern or none" in line
    assert "not a device path" in refused(["bot", "room", "--video", "camera:video0"], capsys, started)


def test_turn_without_credentials(capsys: pytest.CaptureFixture[str], started: list[str]) -> None:
    line = refused(["join", "room", "--turn", "turn:127.0.0.1:3478"], capsys, started)
    assert "--turn needs" in line and "--turn-user and --turn-password" in line
    line = refused(["bot", "room", "--turn", "turn:127.0.0.1:3478", "--turn-user", "u"], capsys, started)
    assert "add --turn-password" in line and "--turn-user and" not in line
    assert "add --turn URL" in refused(["doctor", "--turn-password", "p"], capsys, started)


def test_an_audio_out_file_in_a_missing_directory(capsys: pytest.CaptureFixture[str], started: list[str],
                                                  tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "x.wav"
    line = refused(["join", "room", "--audio-out", str(target)], capsys, started)
    assert f"--audio-out {target}" in line and f"{target.parent} does not exist" in line
    assert "no audio output device" not in line
    line = refused(["bot", "room", "--record-audio", str(target)], capsys, started)
    assert f"--record-audio {target}" in line and "does not exist" in line


# ------------------------------------------------------------------ every other flag
@pytest.mark.parametrize(("argv", "expected"), [
    (["join", "r", "--audio", "tone:5"], "outside 20–20000 Hz"),
    (["join", "r", "--audio", "microphone"], "not an audio source"),
    (["join", "r", "--audio-out", "speakers"], "not an audio output (expected device"),
    (["bot", "r", "--record-audio", "device"], "give a FILE.wav"),
    (["bot", "r", "--duration", "0"], "--duration must be a positive number of seconds"),
    (["bot", "r", "--duration", "nan"], "--duration must be a positive number"),
    (["bot", "r", "--report", "/nonexistent-dir/r.json"], "the directory /nonexistent-dir does not exist"),
    (["join", "r", "--fps", "0"], "--fps must be a whole number from 1 to 30"),
    (["demo", "--fps", "99"], "--fps must be a whole number from 1 to 30"),
    (["join", "r", "--fps", "fast"], "--fps: invalid int value"),
    (["join", "r", "--connect-timeout", "-1"], "--connect-timeout must be a positive number of seconds"),
    (["bot", "r", "--opus-bitrate", "100"], "--opus-bitrate must be a whole number from 6000 to 510000"),
    (["bot", "r", "--opus-channels", "3"], "--opus-channels: invalid choice"),
    (["join", "r", "--opus-frame-ms", "30"], "--opus-frame-ms: invalid choice"),
    (["join", "r", "--name", ""], "--name must be a non-empty string"),
    (["join", "r", "--video-mode", "sixel"], "--video-mode: invalid choice"),
    (["join", "r", "--portal", "ftp://127.0.0.1"], "--portal: 'ftp://127.0.0.1' is not a URL starting with http"),
    (["bot", "r", "--portal", "http://"], "--portal: not a portal URL"),
    (["join", "r", "--stun", "127.0.0.1:3478"], "--stun: '127.0.0.1:3478' is not a STUN URL; expected e.g. stun:"),
    (["join", "r", "--stun", "stun:127.0.0.1:3478?transport=tcp"], "a STUN URL takes no ?transport="),
    (["join", "r", "--stun", "stun:127.0.0.1:0"], "port 0 is not within 1–65535"),
    (["join", "r", "--turn", "turn:127.0.0.1?transport=sctp", "--turn-user", "u", "--turn-password", "p"],
     "transport must be udp or tcp"),
    (["join", "r", "--turn", "turns:127.0.0.1:5349?transport=udp", "--turn-user", "u", "--turn-password", "p"],
     "turns: is TLS over TCP"),
    (["doctor", "--stun", "stuns:127.0.0.1"], "stuns: is not supported"),
    (["doctor", "--timeout", "0"], "--timeout must be a positive number of seconds"),
    (["doctor", "--portal", "127.0.0.1:8787"], "is not a URL starting with http"),
    (["skydb", "get", "--portal", "not-a-url", "--seed", "s", "k"], "is not a URL starting with http"),
    (["join", "r", "--share-sfu", "https://127.0.0.1/janus", "--sfu-room", "1"],
     "--share-sfu: the SFU url must start with wss:// or ws:// (got https scheme)"),
    (["bot", "r", "--share-sfu", "wss://127.0.0.1/janus"], "--share-sfu wss://127.0.0.1/janus: add --sfu-room N"),
    (["join", "r", "--share-sfu", "wss://127.0.0.1/janus", "--sfu-room", "0"], "the SFU room must be between 1 and"),
    (["join", "r", "--share-sfu", "wss://127.0.0.1/janus", "--sfu-room", "one"], "--sfu-room: invalid int value"),
    (["bot", "r", "--share-sfu", "wss://u:p@127.0.0.1/janus", "--sfu-room", "3"], "must not carry a user name"),
    (["join", "r", "--share-sfu", "wss://127.0.0.1/janus", "--sfu-room", "3", "--sfu-pin", "a\tb"],
     "the SFU pin must be 1–128 printable characters"),
    (["join", "r", "--sfu-room", "3"],
     "--sfu-room/--sfu-pin/--sfu-plugin describe the SFU of --share-sfu: add --share-sfu"),
    (["bot", "r", "--sfu-pin", "1234"], "add --share-sfu"),
    (["bot", "r", "--sfu-plugin", "audiobridge"], "add --share-sfu"),
    (["bot", "r", "--share-sfu", "wss://127.0.0.1/janus", "--sfu-room", "3", "--sfu-plugin", "textroom"],
     "--sfu-plugin: invalid choice"),
    (["join", "r", "--sfu-at", "1"], "--sfu-at must be 0 (never move onto the SFU) or a room size from 2 to 64"),
    (["bot", "r", "--sfu-hold", "0"], "--sfu-hold must be a positive number of seconds"),
])
def test_every_flag_is_checked(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str],
                               started: list[str]) -> None:
    assert expected in refused(argv, capsys, started)


@pytest.mark.parametrize("argv", [
    ["join", "r", "--audio", "tone:440", "--video", "pattern", "--audio-out", "none", "--fps", "10"],
    ["join", "r", "--video", "camera:/dev/video0", "--audio", "mic", "--audio-out", "device:null"],
    ["bot", "r", "--stun", "stun:127.0.0.1:3478", "--turn", "turn:127.0.0.1:3478?transport=tcp",
     "--turn-user", "u", "--turn-password", "p", "--duration", "1.5", "--audio", "tone", "--video", "none"],
    ["join", "r", "--turn", "turns:127.0.0.1:5349", "--turn-user", "u", "--turn-password", "p"],
    ["demo", "--fps", "5", "--video-mode", "256"],
    ["join", "r", "--share-sfu", "wss://127.0.0.1:8989/janus", "--sfu-room", "1234", "--sfu-pin", "secret"],
    ["bot", "r", "--share-sfu", "ws://127.0.0.1:8188", "--sfu-room", "7", "--share-turn"],
    ["doctor", "--portal", "http://127.0.0.1:8787", "--timeout", "0.5"],
])
def test_good_flags_reach_the_command(argv: list[str], capsys: pytest.CaptureFixture[str],
                                      started: list[str], tmp_path: Path) -> None:
    code, err = run(argv, capsys)
    assert (code, err, started) == (0, [], [argv[0]])


def test_a_recording_in_a_writable_directory_is_accepted(capsys: pytest.CaptureFixture[str],
                                                         started: list[str], tmp_path: Path) -> None:
    code, err = run(["bot", "r", "--record-audio", str(tmp_path / "heard.wav"),
                     "--report", str(tmp_path / "r.json")], capsys)
    assert (code, err, started) == (0, [], ["bot"])
    code, err = run(["join", "r", "--audio-out", str(tmp_path / "heard.wav")], capsys)
    assert (code, err) == (0, [])


# ------------------------------------------------------------------ as a user runs it
@pytest.fixture
def listening_portal() -> Iterator[tuple[str, socket.socket]]:
    """A TCP socket on 127.0.0.1 posing as the portal: any connection to it is "a portal contacted"."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield f"http://127.0.0.1:{server.getsockname()[1]}", server


def _contacted(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


@pytest.mark.parametrize("argv", [
    ["join", "room", "--audio", "tone:abc"],
    ["join", "", "--video", "pattern"],
    ["bot", "room", "--video", "webcam"],
    ["bot", "room", "--turn", "turn:127.0.0.1:3478"],
    ["join", "room", "--audio-out", "/nonexistent/dir/x.wav"],
])
def test_the_real_command_starts_nothing(argv: list[str], listening_portal: tuple[str, socket.socket],
                                         tmp_path: Path) -> None:
    url, server = listening_portal
    done = subprocess.run([sys.executable, "-m", "sdparta", *argv, "--portal", url], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "dumb",
                                           "SDPARTA_CONFIG": str(tmp_path / "absent.toml")})
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"sdparta {argv[0]}: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""  # no app drew anything
    assert not _contacted(server)
