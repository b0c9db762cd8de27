"""User settings, each value remembering where it came from (``sdparta config --show``).

Precedence, lowest first: built-in defaults (fps lowered when ``SSH_CONNECTION`` says we run over
SSH; that value's source reads "environment …"), the TOML config file, command-line flags.
The file lives at ``platformdirs.user_config_dir("sdparta")/config.toml``; ``SDPARTA_CONFIG``
points elsewhere. With no portal and no relay configured, a call uses 3 of the built-in public Nostr
relays (chosen per room, so everyone in it picks the same) and a public STUN server — the defaults
for two people in different homes with no server of their own; naming a portal or relay replaces
them (and then no STUN server is used unless one is named).

``join``, ``demo`` and ``bot`` all build their call with :func:`call_config` (a bot reads no config
file: it is configured by its flags alone). ``UserSettings`` holds each default (the engine's from
``sdparta.engine.defaults``).

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

    # name a Janus SFU in the sealed settings of every room joined (like --share-sfu)
    [share_sfu]
    url = "wss://sfu.example.org/janus"
    room = 1234
    pin = "optional"
    # plugin = "audiobridge"   # an audio-only room: one stream up, one mix down

    # move a room onto its SFU at this many members (0: never), back after it stayed smaller this long
    sfu_at = 4
    sfu_hold = 30
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from sdparta.engine import defaults  # the engine's defaults (constants only: no aiortc is imported)

if TYPE_CHECKING:
    from sdparta.engine.call_config import CallConfig
    from sdparta.sfu.settings import SfuEntry

VIDEO_MODES = ("truecolor", "256", "mono")
SSH_FPS = 8
#: Longest room name accepted: everyone types it, and the status bar shows it.
ROOM_NAME_MAX = 200


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
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{key} must be a positive number of seconds, not {value!r}")
    return float(value)


def positive_seconds(key: str, value: Any) -> float:
    """A duration or timeout that must be > 0 (``--duration``, ``--timeout``); ValueError names ``key``."""
    return _positive(key, value)


# The syntax aiortc/aioice actually use (rtcicetransport.connection_kwargs): a URL they cannot use is
# dropped there without a word, so it is refused here, with the form that would work.
_ICE_URL = re.compile(r"(?P<scheme>[a-z]+):(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
                      r"(?::(?P<port>[0-9]+))?(?:\?transport=(?P<transport>.*))?")
_ICE_EXAMPLES = {"stun": "stun:stun.example.org:3478",
                 "turn": "turn:relay.example.org:3478?transport=udp (or tcp), turns:relay.example.org:5349"}


def check_ice_url(url: Any, kind: str) -> str:
    """A ``stun:HOST[:PORT]`` URL (``kind="stun"``), or ``turn:HOST[:PORT][?transport=udp|tcp]`` /
    ``turns:HOST[:PORT]`` (TLS; ``kind="turn"``). ValueError says what is wrong and shows the form."""
    example = f"expected e.g. {_ICE_EXAMPLES[kind]}"
    match = _ICE_URL.fullmatch(url) if isinstance(url, str) else None
    schemes = ("stun",) if kind == "stun" else ("turn", "turns")
    if match is None or match["scheme"] not in schemes:
        hint = " (stuns: is not supported: use stun:)" if isinstance(url, str) and url.startswith("stuns:") else ""
        raise ValueError(f"{url!r} is not a {kind.upper()} URL{hint}; {example}")
    port, transport = match["port"], match["transport"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"{url!r}: port {port} is not within 1–65535; {example}")
    if transport is not None:
        if kind == "stun":
            raise ValueError(f"{url!r}: a STUN URL takes no ?transport= (STUN is UDP); {example}")
        if transport not in ("udp", "tcp"):
            raise ValueError(f"{url!r}: transport must be udp or tcp, not {transport!r}; {example}")
        if match["scheme"] == "turns" and transport != "tcp":
            raise ValueError(f"{url!r}: turns: is TLS over TCP; for UDP use turn:{match['host']}"
                             f"{':' + port if port else ''}?transport=udp")
    return url


def _url_list(key: str, value: Any, allow_empty: bool) -> list[Any]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ValueError(f"{key} must be a {'' if allow_empty else 'non-empty '}list of URLs, not {value!r}")
    return list(value)


def _portals(key: str, value: Any) -> list[str]:
    """http(s) portal URLs, checked by the portal client's own check (the one every open uses)."""
    from sdparta.store.portal_client import check_portal_url  # httpx: imported only when checking

    urls = _url_list(key, value, allow_empty=True)
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{key}: {url!r} is not a URL starting with http:// or https://")
        try:
            check_portal_url(url)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return urls


def _relays(key: str, value: Any) -> list[str]:
    """Nostr relay URLs (ws:// or wss://), normalised as the relay client does."""
    from sdparta.nostr.info import relay_url

    urls = _url_list(key, value, allow_empty=True)
    try:
        return list(dict.fromkeys(relay_url(url) for url in urls))
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _stun(key: str, value: Any) -> list[str]:
    urls = _url_list(key, value, allow_empty=True)
    for url in urls:
        try:
            check_ice_url(url, "stun")
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return urls


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
        if not isinstance(entry, dict) or set(entry) != {"url", "username", "password"}:
            shown = {**entry, "password": "***"} if isinstance(entry, dict) and "password" in entry else entry
            raise ValueError(f"{key}: each entry needs url, username and password (a TURN server's "
                             f"long-term credentials) and nothing else, not {shown!r}")
        try:
            check_ice_url(entry["url"], "turn")
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        for part in ("username", "password"):
            if not isinstance(entry[part], str) or not entry[part]:
                raise ValueError(f"{key}: {part} of {entry['url']} must be a non-empty string")
        servers.append({"url": entry["url"], "username": entry["username"], "password": entry["password"]})
    return servers


def _share_sfu(key: str, value: Any) -> dict[str, Any]:
    """``{url, room[, pin][, type][, plugin]}``: an SFU entry as the room settings carry it (sdparta.sfu.settings)."""
    from sdparta.sfu.settings import parse_sfu_entry  # pure parsing (no network, no aiortc)

    if not isinstance(value, dict):
        raise ValueError(f'{key} must be a table {{url = "wss://…", room = N, pin = "…" (optional)}}, '
                         f"not {type(value).__name__}")
    try:
        entry = parse_sfu_entry({"type": "janus", "pin": None, **value})
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    return entry.to_json()


def _sfu_at(key: str, value: Any) -> int:
    """0 (never) or 2–64 members: below 2 nobody is there to send to, and 64 is past any mesh."""
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 2 <= value <= 64):
        raise ValueError(f"{key} must be 0 (never move onto the SFU) or a room size from 2 to 64, not {value!r}")
    return value


def check_room_name(room: str) -> str:
    """Everyone must type the same name (it derives the room's keys): refuse one that is empty,
    blank, absurdly long or holds control characters, before anything starts."""
    if not room.strip():
        raise ValueError("the room name is empty: give one, e.g. sdparta join my-room")
    if len(room) > ROOM_NAME_MAX:
        raise ValueError(f"the room name is {len(room)} characters long; keep it under {ROOM_NAME_MAX}")
    if any(not ch.isprintable() and ch != " " for ch in room):
        raise ValueError(f"the room name {room!r} holds control or invisible characters; "
                         "use letters, digits and punctuation")
    return room


@dataclass(frozen=True)
class TurnSetting:
    """One TURN server of the settings (one per URL)."""

    url: str
    """``turn:`` or ``turns:`` URL, e.g. ``turn:relay.example.org:3478?transport=udp``."""
    username: str = ""
    """TURN username ("" when none is configured)."""
    password: str = ""
    """TURN password ("" when none is configured)."""


def _default_name() -> str:
    return os.environ.get("USER") or "anonymous"


@dataclass(frozen=True)
class UserSettings:
    """The effective settings, typed. The field defaults are the built-in defaults (the engine's are
    taken from ``engine/defaults.py``); the field order is the order ``sdparta config --show`` lists."""

    name: str = field(default_factory=_default_name)
    """Display name the other participants see (default: ``$USER``)."""
    portals: list[str] = field(default_factory=list)
    """Skynet-API portals the room is signalled through: written to all, read from all."""
    relays: list[str] = field(default_factory=list)
    """Nostr relays the room is signalled through (with the portals, if any). With neither configured,
    3 of the built-in public relays (engine/defaults.py PUBLIC_RELAYS, chosen per room) and a public
    STUN server are used."""
    stun: list[str] = field(default_factory=list)
    """STUN server URLs; none unless named (or the public one, with the public relays)."""
    turn: list[TurnSetting] = field(default_factory=list)
    """TURN relays, one entry per URL with its credentials."""
    relay_only: bool = False
    """Offer only TURN relay candidates (hides this machine's addresses from the peers)."""
    share_sfu: SfuEntry | None = None
    """A Janus SFU to name in the sealed settings of every room joined (``--share-sfu``)."""
    sfu_at: int = defaults.SFU_AT
    """A room that names an SFU moves onto it at this many members, us included (0: never, stay a mesh)."""
    sfu_hold: float = defaults.SFU_HOLD_S
    """Seconds a room on its SFU must stay small before it returns to the mesh (no flapping)."""
    video_mode: str = "truecolor"
    """How video tiles are drawn: truecolor, 256 or mono."""
    fps: int = 15
    """Video tile frames per second in the app (``SSH_FPS`` over SSH)."""
    opus_bitrate: int = defaults.OPUS_BITRATE
    """Opus bitrate in bit/s (aiortc's own is 96 kbit/s)."""
    opus_channels: int = defaults.OPUS_CHANNELS
    """Opus channels: 1 (mono) or 2 (stereo)."""
    audio_only: bool = False
    """Send no video at all."""
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    """Seconds a pair may take to connect before it is failed."""


#: Every setting: its check (which also normalises the value). Defaults are UserSettings' field defaults.
CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "name": _str,
    "portals": _portals,
    "relays": _relays,
    "stun": _stun,
    "turn": _turn,
    "relay_only": _bool,
    "share_sfu": _share_sfu,
    "sfu_at": _sfu_at,
    "sfu_hold": _positive,
    "video_mode": _video_mode,
    "fps": _int_in(1, 30),
    "opus_bitrate": _int_in(6000, 510000),
    "opus_channels": _channels,
    "audio_only": _bool,
    "connect_timeout": _positive,
}
assert list(CHECKS) == [f.name for f in fields(UserSettings)], "every setting needs a check and a default"


def _defaults() -> dict[str, Any]:
    """The built-in defaults in the raw form the checks produce (TURN entries as dicts)."""
    defaults = UserSettings()
    values = {f.name: getattr(defaults, f.name) for f in fields(UserSettings)}
    values["turn"] = [{"url": t.url, "username": t.username, "password": t.password} for t in defaults.turn]
    values["share_sfu"] = defaults.share_sfu.to_json() if defaults.share_sfu is not None else None
    return values


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
            raise ConfigError(_one_line(f"{source}: {exc}")) from None
        self.sources[key] = source

    @property
    def typed(self) -> UserSettings:
        """The values as a typed (frozen) record."""
        from sdparta.sfu.settings import parse_sfu_entry

        sfu = self.values["share_sfu"]
        values = {**self.values, "turn": [TurnSetting(**t) for t in self.values["turn"]],
                  "share_sfu": parse_sfu_entry(sfu) if sfu is not None else None}
        return UserSettings(**values)


def _one_line(message: str) -> str:
    """Config errors are printed as one line (``config error: …``), whatever the value held."""
    return " ".join(message.split())


def load_settings(cli_overrides: dict[str, Any] | None = None, path: Path | None = None, *,
                  config_file: bool = True) -> Settings:
    """Defaults < config file < command line (``None`` in ``cli_overrides`` means "not given").
    ``config_file=False`` reads no file (``sdparta bot``: a bot is configured by its flags alone)."""
    settings = Settings(_defaults(), dict.fromkeys(CHECKS, "default"))
    if over_ssh():
        settings.set("fps", SSH_FPS, "environment (SSH_CONNECTION set: fewer frames over SSH)")
    path = path or config_path()
    if config_file and path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(_one_line(f"cannot read {path}: {exc}")) from exc
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
    """The table `sdparta config --show` prints; TURN passwords are masked. With no portal and no
    relay named, it also says what a call uses instead (the public relays and STUN server) and how
    to replace them: defaults that reach public hosts must be visible, not implied."""
    import textwrap  # only for this note

    path = config_path()
    width = max(len(k) for k in settings.values)
    public = not settings["portals"] and not settings["relays"]
    lines = [f"config file: {path}{'' if path.exists() else ' (not present: defaults apply)'}",
             f"identity:    {identity_path()}", ""]
    for key, value in settings.values.items():
        shown = [{**t, "password": "***" if t.get("password") else ""} for t in value] if key == "turn" else value
        if key == "share_sfu" and value is not None and value.get("pin") is not None:
            shown = {**value, "pin": "***"}
        note = ""
        if public and key == "relays":
            note = f" (none named: {defaults.PUBLIC_RELAYS_PER_ROOM} public relays per room, below)"
        elif public and key == "stun" and not value:
            note = f" (none named: the public {', '.join(defaults.PUBLIC_STUN)})"
        lines.append(f"{key:<{width}} = {shown!r:<40} # {settings.sources[key]}{note}")
    if public:
        stun = ("the STUN servers above" if settings["stun"]
                else f"the public STUN server {', '.join(defaults.PUBLIC_STUN)}")
        lines += ["", *textwrap.wrap(
            f"No portal and no relay configured: a call meets the others on {defaults.PUBLIC_RELAYS_PER_ROOM} of "
            "these public Nostr relays, chosen per room from its keys (everyone in the room picks the same "
            f"{defaults.PUBLIC_RELAYS_PER_ROOM}), and uses {stun}:", 100)]
        lines += [f"  {url}" for url in defaults.PUBLIC_RELAYS]
        lines += ["To replace them, name your own in the config file:",
                  '  relays = ["wss://…"]  and/or  portals = ["https://…"]',
                  "or on the command line: --relay URL / --portal URL (repeatable). Then no STUN server is used",
                  'unless stun = ["stun:…"] (or --stun URL) names one.']
    return "\n".join(lines)



# ------------------------------------------------------------------------------- calls
@dataclass(frozen=True)
class CallFlags:
    """What the command line says about one call (``join``, ``bot``, ``demo``). ``None`` = not given:
    the settings decide. The media defaults are ``sdparta join``'s (the bot's parser has its own)."""

    portals: list[str] | None = None
    """``--portal`` URLs."""
    relays: list[str] | None = None
    """``--relay`` URLs (Nostr)."""
    password: str = ""
    """``--password``: the room password (part of the room's key)."""
    name: str | None = None
    """``--name``: display name."""
    identity: str | None = None
    """``--identity``: identity key file."""
    stun: list[str] | None = None
    """``--stun`` URLs."""
    turn: list[str] | None = None
    """``--turn`` URLs (each gets ``turn_user`` / ``turn_password``)."""
    turn_user: str | None = None
    """``--turn-user``."""
    turn_password: str | None = None
    """``--turn-password``."""
    relay_only: bool = False
    """``--relay-only`` (False = not given)."""
    share_turn: bool = False
    """``--share-turn``: put our TURN relay into the room's sealed settings."""
    share_sfu: str | None = None
    """``--share-sfu URL``: name this Janus SFU in the room's sealed settings (with ``sfu_room``)."""
    sfu_room: int | None = None
    """``--sfu-room N``: the Janus room of ``--share-sfu``."""
    sfu_pin: str | None = None
    """``--sfu-pin PIN``: that room's PIN, if it has one."""
    sfu_plugin: str | None = None
    """``--sfu-plugin``: videoroom (audio and video) or audiobridge (an audio-only room)."""
    sfu_at: int | None = None
    """``--sfu-at N``: move onto the room's SFU at N members (0: never)."""
    sfu_hold: float | None = None
    """``--sfu-hold S``: seconds small before returning to the mesh."""
    opus_bitrate: int | None = None
    """``--opus-bitrate`` in bit/s."""
    opus_channels: int | None = None
    """``--opus-channels``."""
    opus_frame_ms: int | None = None
    """``--opus-frame-ms`` (None: the engine chooses by room size)."""
    audio_only: bool = False
    """``--audio-only`` (False = not given)."""
    connect_timeout: float | None = None
    """``--connect-timeout`` in seconds."""
    push: bool = True
    """False with ``--no-push``: poll even if the portal offers push."""
    video: str = "camera"
    """``--video``: camera | pattern | none."""
    audio: str = "mic"
    """``--audio``: mic | tone:HZ | none."""
    audio_out: str = "device"
    """Where received audio goes: device | none | FILE.wav."""
    video_mode: str | None = None
    """``--video-mode`` of the app's tiles."""
    fps: int | None = None
    """``--fps`` of the app's tiles."""

    def network_overrides(self) -> dict[str, Any]:
        """Portals, STUN/TURN and --relay-only as settings overrides (None: keep the config's)."""
        overrides: dict[str, Any] = {"portals": self.portals, "relays": self.relays, "stun": self.stun,
                                     "relay_only": True if self.relay_only else None}
        if self.share_sfu is not None:
            overrides["share_sfu"] = {"url": self.share_sfu, "room": self.sfu_room, "pin": self.sfu_pin}
            if self.sfu_plugin is not None:
                overrides["share_sfu"]["plugin"] = self.sfu_plugin
        if self.turn:
            overrides["turn"] = [{"url": url, "username": self.turn_user or "", "password": self.turn_password or ""}
                                 for url in self.turn]
        return overrides

    def overrides(self) -> dict[str, Any]:
        """Every setting this command line gives, as ``load_settings`` overrides."""
        return {**self.network_overrides(), "name": self.name, "video_mode": self.video_mode, "fps": self.fps,
                "opus_bitrate": self.opus_bitrate, "opus_channels": self.opus_channels,
                "connect_timeout": self.connect_timeout, "audio_only": True if self.audio_only else None,
                "sfu_at": self.sfu_at, "sfu_hold": self.sfu_hold}


def call_config(room: str, flags: CallFlags, *, config_file: bool = True,
                persistent_identity: bool = True) -> tuple[CallConfig, Settings]:
    """The one way a command builds its call: settings (defaults < config file < flags) → CallConfig.

    ``config_file=False`` ignores the config file (bots); ``persistent_identity=False`` gives a fresh
    identity unless ``--identity`` names one (bots), else the user's identity file is used.
    Raises ConfigError for a bad value."""
    from aiortc import RTCIceServer

    from sdparta.engine.call_config import CallConfig

    settings = load_settings(flags.overrides(), config_file=config_file)
    values = settings.typed
    public = not values.portals and not values.relays  # nothing named: the public defaults
    stun = values.stun or (list(defaults.PUBLIC_STUN) if public else [])
    ice = [RTCIceServer(urls=url) for url in stun]
    ice += [RTCIceServer(urls=t.url, username=t.username, credential=t.password) for t in values.turn]
    if flags.identity:
        identity: Path | None = Path(flags.identity)
    else:
        identity = identity_path() if persistent_identity else None
    config = CallConfig(
        room=room, portals=list(values.portals), relays=list(values.relays), public_relays=public,
        password=flags.password, name=values.name,
        identity_path=identity, video="none" if values.audio_only else flags.video, audio=flags.audio,
        audio_out=flags.audio_out, audio_only=values.audio_only, opus_bitrate=values.opus_bitrate,
        opus_channels=values.opus_channels, ice_servers=ice, relay_only=values.relay_only,
        connect_timeout=values.connect_timeout, push=flags.push, share_turn=flags.share_turn,
        share_sfu=values.share_sfu, sfu_at=values.sfu_at, sfu_hold_s=values.sfu_hold,
        opus_frame_ms=flags.opus_frame_ms,
    )
    return config, settings
