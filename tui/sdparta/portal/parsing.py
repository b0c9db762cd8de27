"""Reading what clients send the portal: every field checked, every problem a BadRequest.

Request shapes are skynet-js 4.x's and skyd's (see ``sdparta.portal.app``). Nothing here trusts
the client: sizes are bounded before bytes are decoded and JSON nesting before it is parsed.
"""

from __future__ import annotations

from typing import Any

from sdparta import safe_json
from sdparta.store.base import InvalidEntry, RegistryEntry
from sdparta.store.crypto import parse_revision

#: A registry POST body is ~600 bytes; more is refused with 413.
MAX_REGISTRY_BODY = 4096


class BadRequest(ValueError):
    """A request field is malformed; the message is shown to the client."""


def load_json(raw: str | bytes, what: str) -> Any:
    """A client's JSON (a registry POST body, a websocket message). Nesting is bounded before parsing
    (the parser recurses once per level); BadRequest saying why it is not usable JSON."""
    try:
        return safe_json.loads(raw, what=what)
    except safe_json.JSONError as exc:
        raise BadRequest(str(exc.__cause__ or exc)) from None


def parse_hex(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a hex string")
    if len(value) != 2 * length:
        raise BadRequest(f"{what} must be {length} bytes ({2 * length} hex digits)")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest(f"{what} is not valid hex") from None


def parse_pubkey_string(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("ed25519:"):
        raise BadRequest("publickey must look like ed25519:<64 hex digits>")
    return parse_hex(value[len("ed25519:"):], 32, "publickey")


def parse_byte_array(value: Any, what: str, max_len: int) -> bytes:
    """skynet-js sends bytes as JSON arrays of numbers; hex strings are accepted too."""
    if isinstance(value, str):
        if len(value) > 2 * max_len:
            raise BadRequest(f"{what} is too long (more than {max_len} bytes)")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise BadRequest(f"{what} is not valid hex") from None
    if not isinstance(value, list):
        raise BadRequest(f"{what} must be an array of bytes")
    if len(value) > max_len:
        raise BadRequest(f"{what} is too long ({len(value)} > {max_len} bytes)")
    if not all(type(b) is int and 0 <= b <= 255 for b in value):
        raise BadRequest(f"{what} must be an array of bytes (integers 0-255)")
    return bytes(value)


def parse_registry_post(raw: bytes) -> RegistryEntry:
    """The entry in a skynet-js ``POST /skynet/registry`` body (not yet signature-checked)."""
    try:
        body = load_json(raw, "body")
    except BadRequest as exc:
        raise BadRequest(f"malformed registry entry: body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest("malformed registry entry: the body must be a JSON object")
    pk = body.get("publickey")
    if isinstance(pk, str):  # Go clients send SiaPublicKey as "ed25519:<hex>"
        public_key = parse_pubkey_string(pk)
    elif isinstance(pk, dict) and pk.get("algorithm") == "ed25519":
        public_key = parse_byte_array(pk.get("key"), "publickey.key", 32)
        if len(public_key) != 32:
            raise BadRequest("publickey.key must be 32 bytes")
    else:
        raise BadRequest('publickey must be {"algorithm": "ed25519", "key": [32 bytes]}')
    if body.get("type", 1) != 1:
        raise BadRequest("only registry entry type 1 is supported")
    data_key = parse_hex(body.get("datakey"), 32, "datakey")
    try:
        revision = parse_revision(body.get("revision"), "revision must be an unsigned 64-bit integer")
    except InvalidEntry as exc:
        raise BadRequest(str(exc)) from None
    data = parse_byte_array(body.get("data"), "data", 1 << 12)
    signature = parse_byte_array(body.get("signature"), "signature", 64)
    if len(signature) != 64:
        raise BadRequest("signature must be 64 bytes")
    return RegistryEntry(public_key, data_key, data, revision, signature)
