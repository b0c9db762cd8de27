"""User settings: defaults < config file (TOML) < environment < command line, each value
remembering where it came from (``sdparta config --show``)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

DEFAULTS: dict[str, Any] = {
    "name": os.environ.get("USER", "anonymous"),
    "portals": ["http://127.0.0.1:8787"],
    "stun": [],  # no public server is contacted unless configured
    "turn": [],  # [{url, username, password}]
    "relay_only": False,
    "video_mode": "truecolor",
    "fps": 15,
    "opus_bitrate": 32000,
    "opus_channels": 1,
    "audio_only": False,
    "connect_timeout": 20.0,
}
VIDEO_MODES = ("truecolor", "256", "mono")


def config_path() -> Path:
    override = os.environ.get("SDPARTA_CONFIG")
    return Path(override) if override else Path(platformdirs.user_config_dir("sdparta")) / "config.toml"


def identity_path() -> Path:
    """The user's persistent identity key (room members recognise you by its fingerprint)."""
    return Path(platformdirs.user_data_dir("sdparta")) / "identity.key"


class ConfigError(ValueError):
    """The config file is unreadable or holds a wrong value; the message names the file and key."""


@dataclass
class Settings:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _check(key: str, value: Any, where: str) -> Any:
    expected = type(DEFAULTS[key])
    if expected is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be a {expected.__name__}, not {value!r}")
    if key == "video_mode" and value not in VIDEO_MODES:
        raise ConfigError(f"{where}: video_mode must be one of {', '.join(VIDEO_MODES)}")
    if key == "fps" and not 1 <= value <= 30:
        raise ConfigError(f"{where}: fps must be between 1 and 30")
    return value


def load_settings(cli_overrides: dict[str, Any] | None = None, path: Path | None = None) -> Settings:
    """Merge defaults, the config file, the environment (SSH lowers fps) and command-line flags."""
    settings = Settings(dict(DEFAULTS), dict.fromkeys(DEFAULTS, "default"))
    if os.environ.get("SSH_CONNECTION"):
        settings.values["fps"] = 8
        settings.sources["fps"] = "environment (SSH_CONNECTION: fewer frames over SSH)"
    path = path or config_path()
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        for key, value in data.items():
            if key not in DEFAULTS:
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(DEFAULTS)})")
            settings.values[key] = _check(key, value, str(path))
            settings.sources[key] = f"config file {path}"
    for key, value in (cli_overrides or {}).items():
        if value is None or key not in DEFAULTS:
            continue
        settings.values[key] = _check(key, value, "command line")
        settings.sources[key] = "command line"
    return settings


def format_settings(settings: Settings) -> str:
    width = max(len(k) for k in settings.values)
    lines = [f"config file: {config_path()}", f"identity:    {identity_path()}", ""]
    for key, value in settings.values.items():
        shown = value
        if key == "turn":
            shown = [{**t, "password": "***"} if isinstance(t, dict) else t for t in value]
        lines.append(f"{key:<{width}} = {shown!r:<40} # {settings.sources[key]}")
    return "\n".join(lines)
