"""``json.loads`` for bytes from the network: nesting bounded *before* parsing, one error type.

CPython's parser recurses once per ``[``/``{``: 50,000 of them raise RecursionError deep inside it
(which callers catching ValueError let through, killing the task that read them). Every JSON decoder
of network data — room messages, presence, settings, registry answers, pushes, data channel
messages, SkyDB values, portal request bodies — goes through :func:`loads`. Callers bound the size.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deep enough for any JSON sdparta or a SkyDB user writes; far below the parser's recursion limit.
DEFAULT_MAX_DEPTH = 32
_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET_RE = re.compile(rb"[\[\]{}]")


class JSONError(ValueError):
    """Not JSON, or nested deeper than allowed."""


def depth_exceeds(raw: bytes, max_depth: int) -> bool:
    """Does the bracket nesting of ``raw`` (outside strings) go deeper than ``max_depth``?"""
    depth = 0
    for bracket in _BRACKET_RE.finditer(_STRING_RE.sub(b'""', raw)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > max_depth:
            return True
    return False


def loads(raw: str | bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, what: str = "JSON", **kwargs: Any) -> Any:
    """Parse ``raw``; JSONError for anything that is not JSON or nests deeper than ``max_depth``."""
    scan = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
    if depth_exceeds(scan, max_depth):
        raise JSONError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(raw, **kwargs)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JSONError(f"{what} is not JSON") from exc
