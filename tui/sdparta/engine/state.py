"""Immutable snapshots of a call: the only thing the UI (or the bot's report) reads.

The engine thread builds a fresh :class:`CallSnapshot` whenever something changes and hands it
to listeners; nothing in here is ever mutated after construction, so it is safe to read from any
thread.  Video frames are *not* in snapshots (see ``Call.latest_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sdparta.room.rendezvous import NetworkState


class PeerStatus(StrEnum):
    """A pair's lifecycle as sdparta sees it (independent of the RTCPeerConnection state machine).

    A ``StrEnum``: members compare equal to (and serialise as) the plain strings snapshots and JSON
    reports have always carried."""

    DISCOVERED = "discovered"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    LEFT = "left"
    GONE = "gone"

    @property
    def finished(self) -> bool:
        """The pair is over (a fresh pair may follow for a member that comes back)."""
        return self in FINISHED

    @property
    def live(self) -> bool:
        return self in LIVE


#: Pairs that are over: nothing more is negotiated on them.
FINISHED: frozenset[PeerStatus] = frozenset({PeerStatus.FAILED, PeerStatus.LEFT, PeerStatus.GONE})
#: Pairs still in the call (every status that is not finished).
LIVE: frozenset[PeerStatus] = frozenset(PeerStatus) - FINISHED
#: Live pairs without a working connection yet: the room is watched closely for their messages.
NEGOTIATING: frozenset[PeerStatus] = frozenset({PeerStatus.DISCOVERED, PeerStatus.CONNECTING,
                                                PeerStatus.RECONNECTING})


class CallStatus(StrEnum):
    """The call as a whole."""

    STARTING = "starting"
    JOINED = "joined"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class StateChange:
    """One entry of a peer's state timeline; ``t`` is seconds since the call started."""

    t: float
    kind: str  # "signaling" | "ice_gathering" | "ice_connection" | "connection" | "peer"
    state: str


@dataclass(frozen=True, slots=True)
class CandidateInfo:
    """One ICE candidate as shown in the ICE panel."""

    foundation: str
    component: int
    protocol: str
    type: str  # host | srflx | prflx | relay
    address: str
    port: int
    priority: int


@dataclass(frozen=True, slots=True)
class CandidatePairInfo:
    """One entry of the ICE check list."""

    local: CandidateInfo
    remote: CandidateInfo
    state: str  # frozen | waiting | in-progress | succeeded | failed
    nominated: bool
    # The one pair media flows on (aioice's nominated pair of the component): several pairs can be
    # nominated (the remote side nominates IPv4 and IPv6 alike), only one is selected.
    selected: bool = False


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Figures derived from ``RTCPeerConnection.getStats`` at one instant."""

    t: float = 0.0
    rtt_ms: float | None = None
    bitrate_in_kbps: float = 0.0
    bitrate_out_kbps: float = 0.0
    packets_received: int = 0
    packets_lost: int = 0
    loss_fraction: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True, slots=True)
class PeerSnapshot:
    """Everything known about one remote participant."""

    session_id: str
    name: str
    fingerprint: str
    public_key: str  # hex
    we_offer: bool
    status: PeerStatus = PeerStatus.DISCOVERED
    failure_reason: str | None = None
    signaling_state: str = "stable"
    ice_gathering_state: str = "new"
    ice_connection_state: str = "new"
    connection_state: str = "new"
    timeline: tuple[StateChange, ...] = ()
    connected_after_s: float | None = None
    path: str | None = None  # "direct" | "stun" | "turn"
    selected_pair: CandidatePairInfo | None = None
    local_candidates: tuple[CandidateInfo, ...] = ()
    remote_candidates: tuple[CandidateInfo, ...] = ()
    check_list: tuple[CandidatePairInfo, ...] = ()
    stats: PeerStats = field(default_factory=PeerStats)
    stats_history: tuple[PeerStats, ...] = ()
    audio_level: float = 0.0  # 0..1, RMS of the last received audio
    speaking: bool = False
    video_frames: int = 0
    audio_seconds: float = 0.0
    remote_muted: bool = False
    remote_camera_off: bool = False
    remote_audio_only: bool = False
    restarts: int = 0  # ICE restarts that brought this pair back
    via: str = "mesh"  # "sfu": their media reaches us through the room's SFU (the pair carries chat)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat line; ``t`` is a unix timestamp."""

    t: float
    from_name: str
    from_fingerprint: str
    text: str
    own: bool = False


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should know and act on (shown as a notification)."""

    seq: int
    severity: str  # "information" | "warning" | "error"
    text: str


@dataclass(frozen=True, slots=True)
class SfuSnapshot:
    """The call's use of the room's SFU: ``state`` mesh | joining | sfu | failed (then on the mesh)."""

    label: str  # "janus @ host"
    plugin: str  # videoroom | audiobridge
    state: str = "mesh"
    error: str | None = None  # why the last attempt failed or the SFU was lost
    events: tuple[StateChange, ...] = ()  # moves and failures, on the call's clock (the timeline's)
    connections: tuple[PeerSnapshot, ...] = ()  # publisher / subscriber / audiobridge, for the ICE panel
    mix_seconds: float = 0.0  # AudioBridge: seconds of the room's mix received

    @property
    def active(self) -> bool:
        return self.state == "sfu"


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """The whole call at one instant."""

    room: str
    name: str
    fingerprint: str
    session_id: str
    portals: tuple[str, ...] = ()
    relays: tuple[str, ...] = ()  # the Nostr relays the room uses (public_relays: the built-in ones, chosen per room)
    public_relays: bool = False
    stun: tuple[str, ...] = ()  # the STUN servers the call's ICE uses (the page's link names the same)
    audio_started_at: float | None = None  # wall clock of the audio output's (a recording's) first sample
    networks: tuple[NetworkState, ...] = ()  # every portal and relay now, with its state and counters
    push: bool = False  # True when the portal's subscription socket is in use, False = polling
    status: CallStatus = CallStatus.STARTING
    error: str | None = None
    mic: str = "off"  # on | muted | missing | off
    mic_source: str = "none"  # what the "mic" is: mic | tone:HZ | none (the --audio setting)
    camera: str = "off"  # on | off | missing | pattern
    audio_out: str = "none"  # device | wav | none | missing
    audio_only: bool = False
    peers: tuple[PeerSnapshot, ...] = ()
    # The SFU the room's sealed settings name ("janus @ host room N"; never its PIN), or None: a mesh.
    room_sfu: str | None = None
    sfu: SfuSnapshot | None = None  # where our media goes now: None while the room names no SFU
    chat: tuple[ChatMessage, ...] = ()
    invalid_messages: int = 0
    notices: tuple[Notice, ...] = ()
    started_at: float = 0.0  # unix time the call started
    password_set: bool = False  # the room has a password (never the password itself: the invite line)
    # Unix time since when nobody else is in the call (no live pair) after joining; None while
    # someone is, or before the join: a wrong password or portal looks exactly like an empty room.
    alone_since: float | None = None
    # Does a portal answer? None = not known yet; False while joining fails (retrying) or a probe
    # made while alone got no answer.
    portal_reachable: bool | None = None
    # The room session's counters (what the bot's report shows), copied when the snapshot is made.
    requests_counted: bool = False  # False until the room session exists (the counters below are its)
    gets: int = 0
    sets: int = 0
    uploads: int = 0
    downloads: int = 0
    conflicts: int = 0
    invalid_reasons: tuple[tuple[str, int], ...] = ()  # (reason, count) in first-seen order; dict() it
    epoch_moves: int = 0  # presence/settings slots abandoned for the next epoch
    loop_restarts: int = 0  # background loops that crashed and were restarted
