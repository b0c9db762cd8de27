"""``d``: one participant's timeline and stats as JSON, in the user's state directory.

Not the current directory: the app is often started from a checkout or a home directory, and a
dump there is litter. The file name is short and made only of safe characters (a remote name
must not choose the path), so the whole path fits on one line of a toast.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path

import platformdirs

from sdparta.engine.state import CallSnapshot, PeerSnapshot

NAME_CHARS = 20  # of the participant's name in the file name


def default_dump_dir() -> Path:
    """``platformdirs.user_state_dir("sdparta")`` (``~/.local/state/sdparta`` on Linux)."""
    return Path(platformdirs.user_state_dir("sdparta"))


def dump_name(peer: PeerSnapshot, now: float) -> str:
    """``bot1-0000000000000001-20260102-030405.json``, shortened: name, session, local time."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", peer.name).strip("._")[:NAME_CHARS] or "peer"
    return f"{name}-{peer.session_id[:8]}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.json"


def write_dump(directory: Path, snap: CallSnapshot, peer: PeerSnapshot, now: float | None = None) -> Path:
    """Write the dump (creating the directory if needed) and return its path; OSError on failure."""
    now = time.time() if now is None else now
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / dump_name(peer, now)
    document = {"dumped_at": now, "room": snap.room, "call_started_at": snap.started_at,
                "me": {"name": snap.name, "fingerprint": snap.fingerprint, "session_id": snap.session_id},
                "peer": asdict(peer)}
    path.write_text(json.dumps(document, indent=2))
    return path


def shown_path(path: Path) -> str:
    """The path as the user would type it: under the home directory as ``~/…``."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)
