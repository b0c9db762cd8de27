"""``sdparta bot``: the engine with no UI — joins like a user, plays its sources, writes a report.

The report (JSON) is rewritten atomically about once a second while the bot runs, so tests and
scripts can wait on conditions in it, and once more on exit. It is a record: participants who left
or are gone leave the engine's live list after a while (engine/membership.py) and are kept in the
report's ``departed`` list. SIGTERM, SIGHUP and SIGINT leave (bye, presence removed), bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdparta.commands.options import call_flags
from sdparta.config import ConfigError, call_config
from sdparta.engine.call import Call, CallConfig
from sdparta.engine.leaving import LEAVE_DEADLINE_S, LEAVE_SIGNALS, detach_from_terminal
from sdparta.engine.state import CallSnapshot, CandidateInfo, ChatMessage, PeerSnapshot

REPORT_INTERVAL = 1.0
DEPARTED_KEPT = 500  # departed pairs a report keeps (a long-running bot in a busy room)
ECHO_TICK = 0.25  # with --echo-chat the bot looks for new chat this often (answers feel immediate)
ECHO_PREFIX = "heard: "
ECHO_MAX_CHARS = 200  # the part of a chat line an echo repeats
ECHO_BURST, ECHO_EVERY_S = 3, 2.0  # at most 3 echoes at once, then one per 2 s (the rest are dropped)


def _first_connected(peer: PeerSnapshot) -> float | None:
    for change in peer.timeline:
        if change.kind == "peer" and change.state == "connected":
            return change.t
    return None


def connected_to_anyone(snapshot: CallSnapshot, departed: tuple[PeerSnapshot, ...] = ()) -> bool:
    """The one rule for "this bot connected": some pair of the snapshot (or one that departed since)
    has connected at least once (``connected_after_s`` is set the first time its link reaches
    ``connected``, and stays set)."""
    return any(p.connected_after_s is not None for p in (*snapshot.peers, *departed))


class PeerRecord:
    """Every pair the bot saw, also after the engine took it off the live list: a snapshot listener
    (engine thread) that keeps the last state of each session that left the list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, PeerSnapshot] = {}
        self._departed: dict[str, PeerSnapshot] = {}

    def __call__(self, snapshot: CallSnapshot) -> None:
        live = {p.session_id: p for p in snapshot.peers}
        with self._lock:
            for sid, peer in self._last.items():
                if sid not in live:
                    self._departed[sid] = peer
            for sid in live:
                self._departed.pop(sid, None)  # listed again: a fresh pair with that session
            while len(self._departed) > DEPARTED_KEPT:  # oldest first out
                del self._departed[next(iter(self._departed))]
            self._last = live

    def departed(self) -> tuple[PeerSnapshot, ...]:
        with self._lock:
            return tuple(self._departed.values())


class ChatEcho:
    """``--echo-chat``: answer each chat line with ``heard: TEXT`` (shown as ``demo-bot-1: heard:
    TEXT``, so a demo user sees chat work both ways). Never its own lines, never an echo (a line
    that starts with ``heard: ``: two echoing bots cannot loop), bounded length, rate-limited."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._last: ChatMessage | None = None
        self._sent: deque[float] = deque(maxlen=ECHO_BURST)

    def replies(self, chat: tuple[ChatMessage, ...]) -> list[str]:
        """The echoes for chat lines that arrived since the last call."""
        fresh = list(chat)
        if self._last is not None and self._last in chat:
            fresh = fresh[len(chat) - chat[::-1].index(self._last):]
        if chat:
            self._last = chat[-1]
        out = []
        for message in fresh:
            if message.own or message.text.startswith(ECHO_PREFIX):
                continue
            now = self.clock()
            if len(self._sent) == ECHO_BURST and now - self._sent[0] < ECHO_BURST * ECHO_EVERY_S:
                continue  # too many too fast: dropped, not queued
            self._sent.append(now)
            text = message.text if len(message.text) <= ECHO_MAX_CHARS else message.text[:ECHO_MAX_CHARS - 1] + "…"
            out.append(f"{ECHO_PREFIX}{text}")
        return out


def _candidate(candidate: CandidateInfo) -> dict[str, Any]:
    return {"type": candidate.type, "protocol": candidate.protocol, "address": candidate.address,
            "port": candidate.port}


def _peer(p: PeerSnapshot) -> dict[str, Any]:
    return {
        "name": p.name,
        "fingerprint": p.fingerprint,
        "session_id": p.session_id,
        "status": p.status,
        "failure_reason": p.failure_reason,
        "we_offer": p.we_offer,
        "connected_after_s": _first_connected(p),
        "connected_after_discovery_s": p.connected_after_s,
        "path": p.path,
        "selected_pair": ({"local": _candidate(p.selected_pair.local),
                           "remote": _candidate(p.selected_pair.remote)}
                          if p.selected_pair is not None else None),
        "restarts": p.restarts,
        "video_frames": p.video_frames,
        "audio_seconds": round(p.audio_seconds, 3),
        "audio_level": round(p.audio_level, 4),
        "rtt_ms": p.stats.rtt_ms,
        "bytes_sent": p.stats.bytes_sent,
        "bytes_received": p.stats.bytes_received,
        "states": [{"t": c.t, "kind": c.kind, "state": c.state} for c in p.timeline],
        "via": p.via,
    }


def _sfu(snapshot: CallSnapshot) -> dict[str, Any]:
    """The room's SFU as this bot uses it (``named`` None: the room is a mesh)."""
    sfu = snapshot.sfu
    if sfu is None:
        return {"named": None, "state": "mesh", "events": []}
    return {"named": snapshot.room_sfu, "plugin": sfu.plugin, "state": sfu.state, "error": sfu.error,
            "mix_seconds": sfu.mix_seconds,
            "events": [{"t": snapshot.started_at + e.t, "text": e.state} for e in sfu.events],
            "connections": [{"role": c.session_id.removeprefix("sfu-"), "connection_state": c.connection_state,
                             "path": c.path, "bytes_sent": c.stats.bytes_sent,
                             "bytes_received": c.stats.bytes_received} for c in sfu.connections]}


def build_report(snapshot: CallSnapshot, departed: tuple[PeerSnapshot, ...] = ()) -> dict[str, Any]:
    """The bot's JSON report (shape documented in README and issue 2), from snapshots alone (the
    engine's live objects belong to its thread): ``peers`` is the live list as the UI shows it,
    ``departed`` the last state of those who have left it since."""
    counted = snapshot.requests_counted  # the room session's counters, as copied into the snapshot
    return {
        "name": snapshot.name,
        "fingerprint": snapshot.fingerprint,
        "session_id": snapshot.session_id,
        "room": snapshot.room,
        "status": snapshot.status,
        "error": snapshot.error,
        "push": snapshot.push,
        "started_at": snapshot.started_at,
        "audio_started_at": snapshot.audio_started_at,  # --record-audio's time zero (its WAV keeps wall time)
        "written_at": time.time(),
        "invalid_messages": snapshot.invalid_messages,
        "invalid_reasons": dict(snapshot.invalid_reasons) if counted else {},
        "requests": ({"get": snapshot.gets, "set": snapshot.sets, "upload": snapshot.uploads,
                      "download": snapshot.downloads, "conflicts": snapshot.conflicts}
                     if counted else {}),
        "chat_received": [{"from": m.from_name, "fingerprint": m.from_fingerprint, "text": m.text, "t": m.t}
                          for m in snapshot.chat if not m.own],
        "chat_sent": [m.text for m in snapshot.chat if m.own],
        "audio_out": snapshot.audio_out,
        "notices": [{"severity": n.severity, "text": n.text} for n in snapshot.notices],
        "peers": [_peer(p) for p in snapshot.peers],
        "sfu": _sfu(snapshot),
        "departed": [_peer(p) for p in departed],
        # every portal and relay: its state and what went through it (relays: events sent, received,
        # rejected with the reason)
        "networks": [{"kind": n.kind, "url": n.url, "state": n.state, "sent": n.sent, "received": n.received,
                      "rejected": n.rejected, "reasons": dict(n.reasons)} for n in snapshot.networks],
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file. Compact JSON: the indented form is
    encoded in pure Python (json's C encoder is used only without indent) and costs a busy bot CPU."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, separators=(",", ":")))
    os.replace(tmp, path)


def config_from_args(args: argparse.Namespace) -> CallConfig:
    """A bot's call: flags only (no config file), a fresh identity unless --identity FILE, a name
    ``bot-PID`` unless --name, sources from --video/--audio, what it hears to --record-audio."""
    flags = call_flags(args, audio_out=args.record_audio or "none")
    flags = replace(flags, name=flags.name or f"bot-{os.getpid()}")
    config, _settings = call_config(args.room, flags, config_file=False, persistent_identity=False)
    return config


def _nobody_cause(config: CallConfig, snapshot: CallSnapshot, joined: bool) -> str:
    """Why a bot saw nobody. A portal that is unreachable, or accepts connections but never answers,
    also means nobody was seen: then the portal is what to fix, not the room name or password."""
    if snapshot.error:
        return snapshot.error  # the last join attempt's failure, e.g. "portal X is not answering (…)"
    if not joined:
        # stopped while the first join attempt was still waiting on the portal(s)
        servers = [*config.portals, *config.relays] or ["the public relays"]
        who = (f"{servers[0]} is not answering" if len(servers) == 1
               else f"{', '.join(servers)} are not answering")
        return f"never joined: {who} (the join had not finished when the bot stopped); check the portal or relay"
    return "same room name, password and portal or relay?"


def run(args: argparse.Namespace) -> int:
    """``sdparta bot``: 0 = connected to someone, 1 = saw participants but never connected,
    3 = saw nobody, 2 = bad options."""
    logging.basicConfig(level=os.environ.get("SDPARTA_LOG", "WARNING").upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    call = Call(config)
    record = PeerRecord()
    call.add_listener(record)
    report_path = Path(args.report) if args.report else None
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP and not stop.is_set():
            detach_from_terminal()  # the terminal is gone: the last messages must not fail on it
        stop.set()

    for sig in (*LEAVE_SIGNALS, signal.SIGINT):
        signal.signal(sig, _on_signal)
    _say(f"sdparta bot {config.name} {call.identity.fingerprint} session {call.session_id}")
    call.start()
    deadline = time.monotonic() + args.duration if args.duration else None
    greeted: set[str] = set()  # session ids that got our --chat line
    echo = ChatEcho() if args.echo_chat else None
    ever_connected = False
    ever_joined = False
    reported = float("-inf")
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(ECHO_TICK if echo else REPORT_INTERVAL if report_path else 0.5)
        snapshot = call.snapshot()
        ever_joined = ever_joined or snapshot.status == "joined"
        live = [p for p in snapshot.peers if p.status not in ("left", "gone", "failed")]
        ever_connected = ever_connected or connected_to_anyone(snapshot)
        if args.chat:  # greet each participant once, as it connects (also late joiners)
            for peer in live:
                if peer.status == "connected" and peer.session_id not in greeted:
                    call.send_chat(args.chat, to=peer.session_id)
                    greeted.add(peer.session_id)
        for reply in echo.replies(snapshot.chat) if echo else ():
            call.send_chat(reply)
        if report_path is not None and time.monotonic() - reported >= REPORT_INTERVAL * 0.9:
            write_report(report_path, build_report(snapshot, record.departed()))
            reported = time.monotonic()
    call.stop(LEAVE_DEADLINE_S)  # bye and presence removal, bounded: a hung portal cannot keep us
    snapshot = call.snapshot()
    departed = record.departed()
    ever_connected = ever_connected or connected_to_anyone(snapshot, departed)
    if report_path is not None:
        write_report(report_path, build_report(snapshot, departed))
    if not snapshot.peers and not departed:
        _say(f"bot: saw nobody in the room ({_nobody_cause(config, snapshot, ever_joined)})", sys.stderr)
        return 3
    if not ever_connected:
        _say("bot: never connected to any participant it saw", sys.stderr)
        return 1
    return 0


def _say(line: str, stream: Any = None) -> None:
    """Print a line; a terminal that went away (EIO) does not turn a clean leave into a crash."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=stream or sys.stdout, flush=True)
