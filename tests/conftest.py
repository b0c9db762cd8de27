"""Shared fixtures: a real portal process and real bot processes, all on 127.0.0.1.

The network guard (tests/support/netguard.py) is installed here, before any test module is imported:
in this process and, through PYTHONPATH, in every Python process a test starts. A test during which
anything tried to reach a host other than this machine fails, even when the code swallowed the error.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import netguard
from support.procs import PortalProcess, start_portal

# ---------------------------------------------------------------- network guard (suite-wide)
_NETGUARD_DIR = Path(tempfile.mkdtemp(prefix="sdparta-netguard-"))
atexit.register(shutil.rmtree, _NETGUARD_DIR, True)
(_NETGUARD_DIR / "violations.jsonl").touch()
netguard.activate_for_children(_NETGUARD_DIR / "violations.jsonl")
netguard.install()


@pytest.fixture(autouse=True)
def _network_guard() -> Iterator[None]:
    """Fail the test if it (or any process it started) tried to reach another host."""
    start = netguard.log_offset()
    yield
    violations = netguard.unexpected_since(start)
    if violations:
        lines = "\n".join(f"  pid {v.get('pid')} {' '.join(map(str, v.get('argv', [])))[:120]}: "
                          f"{v.get('what')} {v.get('target')}" for v in violations)
        pytest.fail(f"network guard: this test tried to reach hosts other than this machine:\n{lines}",
                    pytrace=False)
# ---------------------------------------------------------------- end of the network guard


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[PortalProcess]:
    """A real `sdparta portal` subprocess with push (subscription websocket)."""
    proc = start_portal(tmp_path / "portal.sqlite3")
    try:
        yield proc
    finally:
        proc.stop()
