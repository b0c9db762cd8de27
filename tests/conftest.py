"""Shared fixtures: a real portal process and real bot processes, all on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.procs import PortalProcess, start_portal


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[PortalProcess]:
    """A real `sdparta portal` subprocess with push (subscription websocket)."""
    proc = start_portal(tmp_path / "portal.sqlite3")
    try:
        yield proc
    finally:
        proc.stop()
