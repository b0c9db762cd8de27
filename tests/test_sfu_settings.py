"""The room settings' SFU entry (sdparta.sfu.settings): untrusted input from other participants gets
one clear SfuSettingsError naming the field; good entries round-trip exactly."""

from __future__ import annotations

import json

import pytest

from sdparta.sfu import SfuEntry, SfuSettingsError, parse_sfu_entry, parse_sfu_json
from sdparta.sfu.settings import MAX_ENTRY_BYTES, MAX_PIN_CHARS, MAX_ROOM_ID, MAX_URL_CHARS, check_url

GOOD = {"type": "janus", "url": "wss://sfu.example.org/janus", "room": 1234, "pin": "s3cret"}


def entry(**changes: object) -> dict[str, object]:
    value = dict(GOOD)
    for key, new in changes.items():
        if new is _DROP:
            value.pop(key, None)
        else:
            value[key] = new
    return value


_DROP = object()


# ------------------------------------------------------------------ good input
@pytest.mark.parametrize("value", [
    GOOD,
    entry(pin=None),
    entry(pin=_DROP),
    entry(url="ws://10.0.0.5:8188/"),
    entry(url="wss://[2001:db8::1]:8989/janus"),
    entry(url="wss://sfu.example.org.:443/janus?x=1"),
    entry(url="wss://my_sfu.example.org/"),
    entry(room=1),
    entry(room=MAX_ROOM_ID),
    entry(pin="x" * MAX_PIN_CHARS),
    entry(pin="ünïcødé pin with spaces"),
    entry(url="wss://a.example/" + "p" * (MAX_URL_CHARS - len("wss://a.example/"))),
])
def test_good_entries_round_trip(value: dict[str, object]) -> None:
    parsed = parse_sfu_entry(value)
    assert parsed.url == value["url"] and parsed.room == value["room"] and parsed.pin == value.get("pin")
    assert parsed.type == "janus"
    assert parse_sfu_entry(parsed.to_json()) == parsed
    assert parse_sfu_json(json.dumps(parsed.to_json())) == parsed
    assert parse_sfu_json(json.dumps(parsed.to_json()).encode()) == parsed
    assert parse_sfu_json(json.dumps(value)) == parsed


def test_entry_properties_and_repr_hides_the_pin() -> None:
    parsed = parse_sfu_entry(GOOD)
    assert parsed.host == "sfu.example.org" and parsed.secure and parsed.label() == "janus @ sfu.example.org"
    assert "s3cret" not in repr(parsed) and "s3cret" not in str(parsed)
    plain = parse_sfu_entry(entry(url="ws://10.0.0.5:8188/", pin=None))
    assert not plain.secure and plain.host == "10.0.0.5" and "pin=None" in repr(plain)
    assert SfuEntry(url="wss://sfu.example.org/janus", room=1234, pin="s3cret") == parsed


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("value", "message"), [
    (None, "must be an object, not NoneType"),
    ([GOOD], "must be an object, not list"),
    ("wss://sfu.example.org", "must be an object, not str"),
    (42, "must be an object, not int"),
    (entry(extra=1), "unknown keys: 'extra'"),
    (entry(url=_DROP), "lacks url"),
    ({"pin": "x"}, "lacks type, url, room"),
    (entry(type="mediasoup"), "unsupported SFU type 'mediasoup'"),
    (entry(type="JANUS"), "unsupported SFU type"),
    (entry(type=1), "type must be a string, not int"),
    (entry(type=None), "type must be a string, not NoneType"),
    (entry(type=["janus"]), "type must be a string, not list"),
    (entry(url=None), "url must be a string, not NoneType"),
    (entry(url=8188), "url must be a string, not int"),
    (entry(url=""), "1–512 characters"),
    (entry(url="wss://a.example/" + "p" * MAX_URL_CHARS), "1–512 characters"),
    (entry(url="https://sfu.example.org/janus"), "must start with wss:// or ws:// (got https scheme)"),
    (entry(url="http://sfu.example.org/"), "got http scheme"),
    (entry(url="sfu.example.org:8188"), "must start with wss:// or ws://"),
    (entry(url="//sfu.example.org/"), "got no scheme"),
    (entry(url="wss:///janus"), "names no host"),
    (entry(url="wss://user:pw@sfu.example.org/"), "user name or password"),
    (entry(url="wss://sfu.example.org/#frag"), "#fragment"),
    (entry(url="wss://sfu.example.org:0/"), "port must be 1–65535"),
    (entry(url="wss://sfu.example.org:99999/"), "not a valid URL"),
    (entry(url="wss://sfu.example.org/ janus"), "printable ASCII without spaces"),
    (entry(url="wss://sfu.exämple.org/"), "printable ASCII"),
    (entry(url="wss://sfu.example.org/\x00"), "printable ASCII"),
    (entry(url="wss://bad!host.example/"), "not a valid host name"),
    (entry(url="wss://" + "a" * 64 + ".example/"), "not a valid host name"),
    (entry(url="wss://a..example/"), "not a valid host name"),
    (entry(room="1234"), "room must be an integer, not str"),
    (entry(room=12.0), "room must be an integer, not float"),
    (entry(room=True), "room must be an integer, not bool"),
    (entry(room=None), "room must be an integer, not NoneType"),
    (entry(room=0), "between 1 and"),
    (entry(room=-5), "between 1 and"),
    (entry(room=MAX_ROOM_ID + 1), "between 1 and"),
    (entry(pin=1234), "pin must be a string or null, not int"),
    (entry(pin=True), "pin must be a string or null, not bool"),
    (entry(pin=["x"]), "pin must be a string or null, not list"),
    (entry(pin={"x": 1}), "pin must be a string or null, not dict"),
    (entry(pin=""), "1–128 printable characters"),
    (entry(pin="x" * (MAX_PIN_CHARS + 1)), "1–128 printable characters"),
    (entry(pin="line\nbreak"), "1–128 printable characters"),
    (entry(pin="nul\x00"), "1–128 printable characters"),
])
def test_bad_entries_are_one_clear_error(value: object, message: str) -> None:
    with pytest.raises(SfuSettingsError) as caught:
        parse_sfu_entry(value)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unknown_keys_are_named_and_bounded() -> None:
    with pytest.raises(SfuSettingsError, match="unknown keys") as caught:
        parse_sfu_entry({**GOOD, **{f"k{i}" * 50: i for i in range(100)}})
    assert len(str(caught.value)) < 400


def test_a_huge_wrong_type_is_named_not_printed() -> None:
    with pytest.raises(SfuSettingsError) as caught:
        parse_sfu_entry(entry(type=list(range(100_000))))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(("raw", "message"), [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("{'type': 'janus'}", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    ("null", "must be an object"),
    ('{"type": "janus", "url": "wss://a.example/", "room": 1, "pin": [[["x"]]]}', "nests deeper than 2"),
    ("[" * 100_000 + "]" * 100_000, "more than 2048"),
    ("[" * 1000 + "]" * 1000, "nests deeper than 2"),
    ('{"type": "janus", "url": "wss://a.example/", "room": 1, "pin": "' + "x" * 3000 + '"}', "more than 2048"),
    ('{"type": "janus", "url": "wss://a.example/", "room": 1, "pin": "' + "€" * 700 + '"}', "bytes, more than 2048"),
    (json.dumps(entry(room=1e3)), "room must be an integer, not float"),
    (json.dumps(entry(room=12345678901234567890)), "between 1 and"),
])
def test_bad_json_is_one_clear_error(raw: str | bytes, message: str) -> None:
    with pytest.raises(SfuSettingsError) as caught:
        parse_sfu_json(raw)
    assert message in str(caught.value)


def test_size_bound_is_in_bytes_and_exact() -> None:
    base = json.dumps(entry(pin="x"))
    pad = MAX_ENTRY_BYTES - len(base.encode())
    at_limit = base.replace(' "x"}', ' "x"' + " " * pad + "}")
    assert len(at_limit.encode()) == MAX_ENTRY_BYTES
    assert parse_sfu_json(at_limit).pin == "x"
    with pytest.raises(SfuSettingsError, match="more than 2048"):
        parse_sfu_json(at_limit + " ")


def test_check_url_returns_the_url_unchanged() -> None:
    url = "wss://sfu.example.org:8989/janus?room=1"
    assert check_url(url) is url
