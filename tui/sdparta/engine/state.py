"""Immutable snapshots of a call: the only thing the UI (or the bot's report) reads.

The engine thread builds a fresh :class:`CallSnapshot` whenever something changes and hands it
to listeners; nothing in here is ever mutated after construction, so it is safe to read from any
thread.  Video frames are *not* in snapshots (see ``Call.latest_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Peer lifecycle as sdparta sees it (independent of the RTCPeerConnection state machine).
PEER_STATUSES = ("discovered", "connecting", "connected", "reconnecting", "failed", "left", "gone")


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
    status: str = "discovered"
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
class CallSnapshot:
    """The whole call at one instant."""

    room: str
    name: str
    fingerprint: str
    session_id: str
    portals: tuple[str, ...] = ()
    push: bool = False  # True when the portal's subscription socket is in use, False = polling
    status: str = "starting"  # starting | joined | error | stopped
    error: str | None = None
    mic: str = "off"  # on | muted | missing | off
    camera: str = "off"  # on | off | missing | pattern
    audio_out: str = "none"  # device | wav | none | missing
    audio_only: bool = False
    peers: tuple[PeerSnapshot, ...] = ()
    chat: tuple[ChatMessage, ...] = ()
    invalid_messages: int = 0
    notices: tuple[Notice, ...] = ()
    started_at: float = 0.0  # unix time the call started
