"""The `lab` fixture: a fresh NAT lab per test, torn down whatever happens. Where the lab cannot be
built the tests are skipped with the reason — except under CI, which must run them (it fails)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab.lab import Lab, build_lab, netlab_unavailable

_REASON: list[str | None] = []


def _unavailable() -> str | None:
    if not _REASON:
        _REASON.append(netlab_unavailable())
    return _REASON[0]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the NAT lab must run in CI: {reason}")
        pytest.skip(f"NAT lab unavailable: {reason}")
    built = build_lab(tmp_path)
    try:
        yield built
    finally:
        built.close()
