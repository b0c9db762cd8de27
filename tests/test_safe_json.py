"""Every JSON decoder of network data bounds nesting before parsing (safe_json)."""

from __future__ import annotations

import pytest

from sdparta import safe_json
from sdparta.engine.peer import PeerLink

DEEP = "[" * 50_000


def test_deep_nesting_is_a_json_error_not_a_recursion_error() -> None:
    with pytest.raises(safe_json.JSONError, match="nests deeper"):
        safe_json.loads(DEEP)
    with pytest.raises(safe_json.JSONError, match="nests deeper"):
        safe_json.loads(b'{"a":' * 40 + b"1" + b"}" * 40)


def test_brackets_inside_strings_do_not_count_and_escapes_are_honoured() -> None:
    assert safe_json.loads('{"t":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\" ]]]"}') == {
        "t": "[" * 44 + '" ]]]'}


def test_not_json_is_a_json_error() -> None:
    for raw in (b"\xff\xfe", "{", "1" * 5000, "NaN]"):
        with pytest.raises(safe_json.JSONError):
            safe_json.loads(raw)


def test_a_data_channel_message_nested_deep_is_dropped() -> None:
    """16 KiB of ``[`` on the data channel raised RecursionError in the channel's handler."""
    assert PeerLink.parse_control("[" * 16_000) is None
    assert PeerLink.parse_control('{"t":"ping"}') == {"t": "ping"}
