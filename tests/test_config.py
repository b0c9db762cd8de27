"""Settings: defaults < config file < command line, with the source of every value recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdparta.config import CallFlags, ConfigError, call_config, config_path, format_settings, load_settings


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point SDPARTA_CONFIG at a file that does not exist yet; no SSH unless a test says so."""
    path = tmp_path / "config.toml"
    monkeypatch.setenv("SDPARTA_CONFIG", str(path))
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("USER", "tester")
    return path


def test_defaults_name_no_server(isolated: Path) -> None:
    settings = load_settings({})
    assert settings["portals"] == [] and settings["relays"] == []
    assert settings["stun"] == [] and settings["turn"] == []
    assert (settings["video_mode"], settings["fps"]) == ("truecolor", 15)
    assert (settings["opus_bitrate"], settings["opus_channels"], settings["audio_only"]) == (32000, 1, False)
    assert settings["name"] == "tester"
    assert set(settings.sources.values()) == {"default"}
    assert config_path() == isolated


def test_default_path_is_in_the_user_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SDPARTA_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "sdparta" / "config.toml"


def test_config_file_then_command_line(isolated: Path) -> None:
    isolated.write_text(
        'name = "ana"\nportals = ["https://p1.example", "http://10.0.0.5:8787"]\nstun = ["stun:stun.example:3478"]\n'
        'video_mode = "256"\nfps = 10\nopus_bitrate = 16000\nopus_channels = 2\naudio_only = true\n'
        '[[turn]]\nurl = "turn:turn.example:3478"\nusername = "ana"\npassword = "s3cret"\n')
    settings = load_settings({"fps": 5, "name": None, "video_mode": "mono"})
    assert settings["name"] == "ana" and settings.sources["name"] == f"config file {isolated}"
    assert settings["portals"] == ["https://p1.example", "http://10.0.0.5:8787"]
    assert settings["turn"] == [{"url": "turn:turn.example:3478", "username": "ana", "password": "s3cret"}]
    assert (settings["opus_bitrate"], settings["opus_channels"], settings["audio_only"]) == (16000, 2, True)
    assert settings["fps"] == 5 and settings.sources["fps"] == "command line"
    assert settings["video_mode"] == "mono" and settings.sources["video_mode"] == "command line"
    assert settings.sources["connect_timeout"] == "default"


def test_ssh_lowers_the_default_fps_only(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.2 22")
    settings = load_settings({})
    assert settings["fps"] == 8 and settings.sources["fps"].startswith("environment")
    isolated.write_text("fps = 12\n")
    assert load_settings({})["fps"] == 12  # an explicit choice wins over the SSH default
    assert load_settings({"fps": 20})["fps"] == 20


@pytest.mark.parametrize(("toml", "message"), [
    ("colour = 1\n", "unknown setting 'colour'"),
    ('fps = "fast"\n', "fps must be a whole number from 1 to 30"),
    ("fps = 0\n", "fps must be a whole number"),
    ("fps = true\n", "fps must be a whole number"),
    ('video_mode = "sixel"\n', "video_mode must be one of truecolor, 256, mono"),
    ('portals = ["ftp://x"]\n', "portals: 'ftp://x' is not a URL"),
        ('relays = ["https://relay.example"]\n', "relays: not a relay URL (ws://… or wss://…)"),
    ('portals = ["http://"]\n', "portals: not a portal URL: 'http://'"),
    ('stun = ["stun.example.org"]\n', "stun: 'stun.example.org' is not a STUN URL; expected e.g. stun:"),
    ('stun = ["stuns:s.example:5349"]\n', "stuns: is not supported: use stun:"),
    ('stun = ["stun:s.example:3478?transport=tcp"]\n', "a STUN URL takes no ?transport="),
    ('[[turn]]\nurl = "turn:x"\npass = "y"\n', "turn: each entry needs url, username and password"),
    ('[[turn]]\nurl = "turn:x"\n', "turn: each entry needs url, username and password"),
    ('[[turn]]\nurl = "turn:x"\nusername = ""\npassword = "p"\n', "username of turn:x must be a non-empty"),
    ('[[turn]]\nurl = "turn:x:70000"\nusername = "u"\npassword = "p"\n', "port 70000 is not within 1–65535"),
    ('[[turn]]\nurl = "turn:x?transport=sctp"\nusername = "u"\npassword = "p"\n',
     "transport must be udp or tcp, not 'sctp'"),
    ('[[turn]]\nurl = "turns:x:5349?transport=udp"\nusername = "u"\npassword = "p"\n',
     "turns: is TLS over TCP; for UDP use turn:x:5349?transport=udp"),
    ("connect_timeout = nan\n", "connect_timeout must be a positive number of seconds"),
    ("opus_channels = 3\n", "opus_channels must be 1 (mono) or 2 (stereo)"),
    ("opus_bitrate = 100\n", "opus_bitrate must be a whole number from 6000"),
    ('audio_only = "yes"\n', "audio_only must be true or false"),
    ("name = \n", "cannot read"),
    ('share_sfu = "wss://sfu.example/janus"\n', "share_sfu must be a table {url = "),
    ('[share_sfu]\nurl = "wss://sfu.example/janus"\n', "share_sfu: the SFU entry lacks room"),
    ('[share_sfu]\nurl = "https://sfu.example/janus"\nroom = 1\n', "share_sfu: the SFU url must start with wss://"),
    ('[share_sfu]\nurl = "wss://sfu.example/janus"\nroom = "1"\n', "share_sfu: the SFU room must be an integer"),
    ('[share_sfu]\nurl = "wss://sfu.example/janus"\nroom = 1\ntype = "mcu"\n', "unsupported SFU type 'mcu'"),
    ('[share_sfu]\nurl = "wss://sfu.example/janus"\nroom = 1\nsecret = "x"\n', "unknown keys: 'secret'"),
])
def test_bad_files_name_the_file_and_the_key(isolated: Path, toml: str, message: str) -> None:
    isolated.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_settings({})
    assert str(isolated) in str(error.value)
    assert "\n" not in str(error.value)  # printed as one line: "config error: …"


def test_a_multi_line_toml_value_still_makes_a_one_line_error(isolated: Path) -> None:
    isolated.write_text('name = """\n\n"""\n')
    with pytest.raises(ConfigError, match="name must be a non-empty string") as error:
        load_settings({})
    assert "\n" not in str(error.value)


def test_turn_passwords_are_not_echoed_in_errors(isolated: Path) -> None:
    isolated.write_text('[[turn]]\nurl = "turn:x"\npassword = "hunter2"\n')
    with pytest.raises(ConfigError, match="needs url, username and password") as error:
        load_settings({})
    assert "hunter2" not in str(error.value)


def test_bad_command_line_values_are_errors_too() -> None:
    with pytest.raises(ConfigError, match="command line: fps must be"):
        load_settings({"fps": 99})
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings({"colour": "red"})


def test_format_settings_shows_sources_and_masks_passwords(isolated: Path) -> None:
    isolated.write_text('[[turn]]\nurl = "turns:t.example:5349"\nusername = "u"\npassword = "hunter2"\n')
    text = format_settings(load_settings({"fps": 9}))
    assert "hunter2" not in text and "'password': '***'" in text
    assert f"config file: {isolated}" in text
    assert "command line" in text and f"config file {isolated}" in text and "# default" in text
    fps_line = next(line for line in text.splitlines() if line.startswith("fps"))
    assert "= 9" in fps_line and fps_line.endswith("# command line")


def test_missing_file_is_reported_not_an_error(isolated: Path) -> None:
    assert "not present" in format_settings(load_settings({}))


def test_cli_config_show(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sdparta.cli import main

    isolated.write_text('video_mode = "mono"\n')
    assert main(["config", "--show"]) == 0
    out = capsys.readouterr().out
    assert "video_mode" in out and f"config file {isolated}" in out
    isolated.write_text("fps = -1\n")
    assert main(["config", "--show"]) == 2
    assert "fps must be" in capsys.readouterr().err


def test_the_readme_example_is_a_valid_config(isolated: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("```toml", 1)[1].split("```", 1)[0]
    isolated.write_text(example)
    settings = load_settings({})
    assert all(source.startswith("config file") for key, source in settings.sources.items()
               if key in ("name", "portals", "stun", "turn", "video_mode", "fps", "opus_bitrate"))


def test_with_nothing_named_a_call_uses_the_public_relays_and_stun(isolated: Path) -> None:
    """Two people in different homes with no server of their own: the built-in public relays and a
    public STUN server. Naming a portal or a relay replaces both (no STUN unless named)."""
    from sdparta.engine import defaults

    config, _ = call_config("room", CallFlags())
    assert config.public_relays and config.portals == [] and config.relays == []
    assert [s.urls for s in config.ice_servers] == list(defaults.PUBLIC_STUN)
    for flags in (CallFlags(portals=["http://127.0.0.1:9"]), CallFlags(relays=["ws://127.0.0.1:9"])):
        config, _ = call_config("room", flags)
        assert not config.public_relays and config.ice_servers == []
    config, _ = call_config("room", CallFlags(relays=["WS://127.0.0.1:9", "ws://127.0.0.1:9/"]))
    assert config.relays == ["ws://127.0.0.1:9/"]  # normalised, duplicates merged


def test_every_member_of_a_room_picks_the_same_public_relays() -> None:
    from sdparta.engine import defaults
    from sdparta.room.keys import RoomKeys
    from sdparta.room.networks import public_relays

    a = RoomKeys.derive("room-a", "pw", iterations=1000)
    b = RoomKeys.derive("room-b", "pw", iterations=1000)
    picks = public_relays(a, defaults.PUBLIC_RELAYS, 3)
    assert len(set(picks)) == 3 and set(picks) <= set(defaults.PUBLIC_RELAYS)
    assert picks == public_relays(RoomKeys.derive("room-a", "pw", iterations=1000), defaults.PUBLIC_RELAYS, 3)
    rooms = [public_relays(RoomKeys.derive(f"room-{i}", "", iterations=1000), defaults.PUBLIC_RELAYS, 3)
             for i in range(12)]
    assert len({tuple(r) for r in [*rooms, public_relays(b, defaults.PUBLIC_RELAYS, 3)]}) > 1  # rooms spread


def test_config_show_says_which_public_relays_and_stun_a_call_uses(isolated: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With nothing named the defaults reach public hosts: --show lists them and how to replace them."""
    from sdparta.cli import main
    from sdparta.engine import defaults

    assert main(["config", "--show"]) == 0
    out = capsys.readouterr().out
    relays_line = next(line for line in out.splitlines() if line.startswith("relays"))
    assert "= []" in relays_line and "# default" in relays_line and "3 public relays per room" in relays_line
    assert all(f"  {url}" in out.splitlines() for url in defaults.PUBLIC_RELAYS)
    assert "chosen per room" in " ".join(out.split()) and defaults.PUBLIC_STUN[0] in out
    assert 'relays = ["wss://…"]' in out and 'portals = ["https://…"]' in out
    assert "--relay URL" in out and "--portal URL" in out


@pytest.mark.parametrize("config", ['relays = ["ws://127.0.0.1:7000"]\n', 'portals = ["http://127.0.0.1:8787"]\n'])
def test_config_show_with_a_network_named_lists_no_public_defaults(isolated: Path, config: str) -> None:
    from sdparta.engine import defaults

    isolated.write_text(config)
    text = format_settings(load_settings({}))
    assert not any(url in text for url in defaults.PUBLIC_RELAYS) and defaults.PUBLIC_STUN[0] not in text
    if "relays" in config:
        relays_line = next(line for line in text.splitlines() if line.startswith("relays"))
        assert "'ws://127.0.0.1:7000/'" in relays_line and relays_line.endswith(f"# config file {isolated}")


def test_config_show_with_only_stun_named_says_it_is_used(isolated: Path) -> None:
    isolated.write_text('stun = ["stun:stun.example.org:3478"]\n')
    text = format_settings(load_settings({}))
    assert "uses the STUN servers above" in text.replace("\n", " ") and "stun.l.google.com" not in text


def test_a_shared_sfu_from_the_file_or_the_flags_reaches_the_call_and_show_masks_its_pin(isolated: Path) -> None:
    isolated.write_text('[share_sfu]\nurl = "wss://sfu.example/janus"\nroom = 1234\npin = "hunter2"\n')
    config, settings = call_config("room", CallFlags())
    assert config.share_sfu is not None and (config.share_sfu.url, config.share_sfu.room) == ("wss://sfu.example/janus",
                                                                                          1234)
    assert config.share_sfu.pin == "hunter2"
    text = format_settings(settings)
    line = next(line for line in text.splitlines() if line.startswith("share_sfu"))
    assert "hunter2" not in text and "'pin': '***'" in line and line.endswith(f"# config file {isolated}")
    flags = CallFlags(share_sfu="ws://127.0.0.1:8188", sfu_room=7)  # the command line wins over the file
    config, settings = call_config("room", flags)
    assert config.share_sfu is not None and (config.share_sfu.url, config.share_sfu.room, config.share_sfu.pin) == (
        "ws://127.0.0.1:8188", 7, None)
    assert settings.sources["share_sfu"] == "command line"
    isolated.write_text("")
    assert call_config("room", CallFlags())[0].share_sfu is None  # none named: the room stays a mesh
