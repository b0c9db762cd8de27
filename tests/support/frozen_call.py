"""A deterministic, frozen call for snapshot tests: fixed snapshot, fixed test-pattern frames.

Not a network mock: the UI has no network; this is just a fixed input to render."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from sdparta.engine.state import (
    CallSnapshot,
    CandidateInfo,
    CandidatePairInfo,
    ChatMessage,
    Notice,
    PeerSnapshot,
    PeerStats,
    StateChange,
)


def pattern_frame(seed: int, width: int = 160, height: int = 120) -> np.ndarray:
    """Colour bars with a box, fixed per seed."""
    bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0],
                     [0, 0, 255], [0, 0, 0]], dtype=np.uint8)
    bars = np.roll(bars, seed, axis=0)
    cols = np.arange(width) * 8 // width
    frame = np.ascontiguousarray(np.broadcast_to(bars[cols][None, :, :], (height, width, 3)))
    frame[40:80, 20 + seed * 10 : 60 + seed * 10] = (40, 40, 40)
    return frame


def _cand(kind: str, address: str, port: int) -> CandidateInfo:
    return CandidateInfo("1", 1, "udp", kind, address, port, 2130706431)


def frozen_snapshot() -> CallSnapshot:
    local, remote = _cand("host", "10.0.0.2", 40000), _cand("host", "10.0.0.3", 50000)
    pair = CandidatePairInfo(local, remote, "succeeded", True)
    history = tuple(PeerStats(t=float(i), rtt_ms=2.0 + (i % 5), bitrate_in_kbps=200 + 10 * (i % 7),
                              loss_fraction=0.01 * (i % 3)) for i in range(30))
    timeline = (StateChange(0.0, "peer", "discovered"), StateChange(0.01, "signaling", "stable"),
                StateChange(0.05, "ice_gathering", "complete"), StateChange(0.12, "ice_connection", "checking"),
                StateChange(0.2, "ice_connection", "completed"), StateChange(0.31, "connection", "connected"),
                StateChange(0.31, "peer", "connected"))

    def peer(i: int, **changes: object) -> PeerSnapshot:
        base = PeerSnapshot(
            session_id=f"{i:016x}", name=f"bot{i}", fingerprint=f"{i}a1b:2c3d:4e5f:6a7b", public_key="00" * 32,
            we_offer=i == 1, status="connected", signaling_state="stable", ice_gathering_state="complete",
            ice_connection_state="completed", connection_state="connected", timeline=timeline,
            connected_after_s=0.31, path="direct", selected_pair=pair, local_candidates=(local,),
            remote_candidates=(remote,), check_list=(pair,), stats=history[-1], stats_history=history,
            audio_level=0.2 if i == 1 else 0.0, speaking=i == 1, video_frames=100, audio_seconds=10.0,
            remote_muted=i == 2)
        return replace(base, **changes)  # type: ignore[arg-type]

    peers = (peer(1), peer(2), peer(3, remote_audio_only=True, video_frames=0, path="turn"),
             peer(4, status="left", path=None, stats=PeerStats(), stats_history=()))
    return CallSnapshot(room="snapshot-room", name="me", fingerprint="feed:beef:cafe:f00d", session_id="0" * 16,
                        portals=("http://127.0.0.1:8787",), push=True, status="joined", mic="on", camera="pattern",
                        audio_out="missing", peers=peers,
                        chat=(ChatMessage(0.0, "bot1", "1a1b:2c3d:4e5f:6a7b", "hello from bot1"),
                              ChatMessage(60.0, "me", "feed:beef:cafe:f00d", "hi bot1", own=True)),
                        notices=(Notice(1, "warning", "no audio output device: you will not hear the others"),),
                        started_at=0.0)


class FrozenCall:
    """Implements the UI's CallSource with fixed data; ``publish`` plays the engine thread's part."""

    def __init__(self, snapshot: CallSnapshot | None = None) -> None:
        self._snapshot = snapshot or frozen_snapshot()
        self._listeners: list[Callable[[CallSnapshot], None]] = []
        self.commands: list[tuple[str, object]] = []
        self.frame_seq = 1
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True

    def add_listener(self, fn: Callable[[CallSnapshot], None]) -> None:
        self._listeners.append(fn)

    def publish(self, snapshot: CallSnapshot) -> None:
        """Hand listeners a new snapshot, as the engine does on every change."""
        self._snapshot = snapshot
        for fn in self._listeners:
            fn(snapshot)

    def snapshot(self) -> CallSnapshot:
        return self._snapshot

    def latest_frame(self, session_id: str) -> tuple[int, np.ndarray] | None:
        return self.frame_seq, pattern_frame(int(session_id, 16))

    def latest_local_frame(self) -> tuple[int, np.ndarray] | None:
        return self.frame_seq, pattern_frame(5)

    def set_mic_muted(self, muted: bool) -> None:
        self.commands.append(("mute", muted))

    def set_camera(self, on: bool) -> None:
        self.commands.append(("camera", on))

    def send_chat(self, text: str, to: str | None = None) -> None:
        self.commands.append(("chat", text))

    def restart_ice(self, session_id: str) -> None:
        self.commands.append(("restart", session_id))
