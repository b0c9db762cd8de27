"""``sdparta bot``: the engine with no UI — joins like a user, plays its sources, writes a report.

The report (JSON) is rewritten atomically about once a second while the bot runs, so tests and
scripts can wait on conditions in it, and once more on exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdparta.commands.options import call_flags
from sdparta.config import ConfigError, call_config
from sdparta.engine.call import Call, CallConfig
from sdparta.engine.state import CallSnapshot, CandidateInfo, PeerSnapshot

REPORT_INTERVAL = 1.0


def _first_connected(peer: PeerSnapshot) -> float | None:
    for change in peer.timeline:
        if change.kind == "peer" and change.state == "connected":
            return change.t
    return None


def connected_to_anyone(snapshot: CallSnapshot) -> bool:
    """The one rule for "this bot connected": some pair of the snapshot has connected at least once
    (``connected_after_s`` is set the first time its link reaches ``connected``, and stays set)."""
    return any(p.connected_after_s is not None for p in snapshot.peers)


def _candidate(candidate: CandidateInfo) -> dict[str, Any]:
    return {"type": candidate.type, "protocol": candidate.protocol, "address": candidate.address,
            "port": candidate.port}


def build_report(snapshot: CallSnapshot) -> dict[str, Any]:
    """The bot's JSON report (shape documented in README and issue 2), from the snapshot alone:
    the engine's live objects belong to its thread."""
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
        "peers": [
            {
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
            }
            for p in snapshot.peers
        ],
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
        who = (f"portal {config.portals[0]} is not answering" if len(config.portals) == 1
               else f"portals {', '.join(config.portals)} are not answering")
        return f"never joined: {who} (the join had not finished when the bot stopped); check the portal"
    return "same room name, password and portal?"


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
    report_path = Path(args.report) if args.report else None
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"sdparta bot {config.name} {call.identity.fingerprint} session {call.session_id}", flush=True)
    call.start()
    deadline = time.monotonic() + args.duration if args.duration else None
    greeted: set[str] = set()  # session ids that got our --chat line
    ever_connected = False
    ever_joined = False
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(REPORT_INTERVAL if report_path else 0.5)
        snapshot = call.snapshot()
        ever_joined = ever_joined or snapshot.status == "joined"
        live = [p for p in snapshot.peers if p.status not in ("left", "gone", "failed")]
        ever_connected = ever_connected or connected_to_anyone(snapshot)
        if args.chat:  # greet each participant once, as it connects (also late joiners)
            for peer in live:
                if peer.status == "connected" and peer.session_id not in greeted:
                    call.send_chat(args.chat, to=peer.session_id)
                    greeted.add(peer.session_id)
        if report_path is not None:
            write_report(report_path, build_report(snapshot))
    call.stop()
    snapshot = call.snapshot()
    ever_connected = ever_connected or connected_to_anyone(snapshot)
    if report_path is not None:
        write_report(report_path, build_report(snapshot))
    if not snapshot.peers:
        print(f"bot: saw nobody in the room ({_nobody_cause(config, snapshot, ever_joined)})", file=sys.stderr)
        return 3
    if not ever_connected:
        print("bot: never connected to any participant it saw", file=sys.stderr)
        return 1
    return 0
