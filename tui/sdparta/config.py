"""User settings, each value remembering where it came from (``sdparta config --show``).

Precedence, lowest first: built-in defaults (fps lowered when ``SSH_CONNECTION`` says we run over
SSH; that value's source reads "environment …"), the TOML config file, command-line flags.
The file lives at ``platformdirs.user_config_dir("sdparta")/config.toml``; ``SDPARTA_CONFIG``
points elsewhere. No public server is contacted by default: no STUN, no TURN, a local portal.

Example config.toml::

    name = "ana"
    portals = ["https://portal.example.org", "http://192.168.1.10:8787"]
    stun = ["stun:stun.example.org:3478"]
    video_mode = "256"
    fps = 10
    opus_bitrate = 24000

    [[turn]]
    url = "turn:turn.example.org:3478"
    username = "ana"
    password = "secret"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

VIDEO_MODES = ("truecolor", "256", "mono")
SSH_FPS = 8
DEFAULT_PORTAL = "http://127.0.0.1:8787"


class ConfigError(ValueError):
    """The config file is unreadable or holds a wrong value; the message names the place and key."""


def over_ssh() -> bool:
    """True in an SSH session: fewer frames and smaller video tiles by default (DESIGN §5)."""
    return bool(os.environ.get("SSH_CONNECTION"))


def config_path() -> Path:
    override = os.environ.get("SDPARTA_CONFIG")
    return Path(override) if override else Path(platformdirs.user_config_dir("sdparta")) / "config.toml"


def identity_path() -> Path:
    """The user's persistent identity key (room members recognise you by its fingerprint)."""
    return Path(platformdirs.user_data_dir("sdparta")) / "identity.key"


# ------------------------------------------------------------------------------- validation
def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string, not {value!r}")
    return value.strip()


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def _int_in(low: int, high: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{key} must be a whole number from {low} to {high}, not {value!r}")
        return value
    return check


def _positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds, not {value!r}")
    return float(value)


def _urls(schemes: tuple[str, ...], allow_empty: bool) -> Callable[[str, Any], list[str]]:
    def check(key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise ValueError(f"{key} must be a {'' if allow_empty else 'non-empty '}list of URLs, not {value!r}")
        for url in value:
            if not isinstance(url, str) or not url.startswith(schemes):
                raise ValueError(f"{key}: {url!r} is not a URL starting with {' or '.join(schemes)}")
        return list(value)
    return check


def _video_mode(key: str, value: Any) -> str:
    if value not in VIDEO_MODES:
        raise ValueError(f"{key} must be one of {', '.join(VIDEO_MODES)}, not {value!r}")
    return str(value)


def _channels(key: str, value: Any) -> int:
    if isinstance(value, bool) or value not in (1, 2):
        raise ValueError(f"{key} must be 1 (mono) or 2 (stereo), not {value!r}")
    return int(value)


def _turn(key: str, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of {{url, username, password}} tables, not {value!r}")
    servers = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) - {"url", "username", "password"} or "url" not in entry:
            raise ValueError(f"{key}: each entry needs url (and username, password) and nothing else, "
                             f"not {entry!r}")
        _urls(("turn:", "turns:"), allow_empty=False)(key, [entry["url"]])
        for part in ("username", "password"):
            if not isinstance(entry.get(part, ""), str):
                raise ValueError(f"{key}: {part} must be a string")
        servers.append({"url": entry["url"], "username": entry.get("username", ""),
                        "password": entry.get("password", "")})
    return servers


#: Every setting: its check (which also normalises the value). Defaults are in _defaults().
CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "name": _str,
    "portals": _urls(("http://", "https://"), allow_empty=False),
    "stun": _urls(("stun:", "stuns:"), allow_empty=True),
    "turn": _turn,
    "relay_only": _bool,
    "video_mode": _video_mode,
    "fps": _int_in(1, 30),
    "opus_bitrate": _int_in(6000, 510000),
    "opus_channels": _channels,
    "audio_only": _bool,
    "connect_timeout": _positive,
}


def _defaults() -> dict[str, Any]:
    return {
        "name": os.environ.get("USER") or "anonymous",
        "portals": [DEFAULT_PORTAL],
        "stun": [],  # no public server is contacted unless configured
        "turn": [],
        "relay_only": False,
        "video_mode": "truecolor",
        "fps": 15,
        "opus_bitrate": 32000,
        "opus_channels": 1,
        "audio_only": False,
        "connect_timeout": 20.0,
    }


@dataclass
class Settings:
    """Effective values and, per key, where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def set(self, key: str, value: Any, source: str) -> None:
        try:
            self.values[key] = CHECKS[key](key, value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        self.sources[key] = source


def load_settings(cli_overrides: dict[str, Any] | None = None, path: Path | None = None) -> Settings:
    """Defaults < config file < command line (``None`` in ``cli_overrides`` means "not given")."""
    settings = Settings(_defaults(), dict.fromkeys(CHECKS, "default"))
    if over_ssh():
        settings.set("fps", SSH_FPS, "environment (SSH_CONNECTION set: fewer frames over SSH)")
    path = path or config_path()
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        for key, value in data.items():
            if key not in CHECKS:
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(CHECKS)})")
            settings.set(key, value, f"config file {path}")
    for key, value in (cli_overrides or {}).items():
        if key not in CHECKS:
            raise ConfigError(f"command line: unknown setting {key!r}")
        if value is not None:
            settings.set(key, value, "command line")
    return settings


def format_settings(settings: Settings) -> str:
    """The table `sdparta config --show` prints; TURN passwords are masked."""
    path = config_path()
    width = max(len(k) for k in settings.values)
    lines = [f"config file: {path}{'' if path.exists() else ' (not present: defaults apply)'}",
             f"identity:    {identity_path()}", ""]
    for key, value in settings.values.items():
        shown = [{**t, "password": "***" if t.get("password") else ""} for t in value] if key == "turn" else value
        lines.append(f"{key:<{width}} = {shown!r:<40} # {settings.sources[key]}")
    return "\n".join(lines)
