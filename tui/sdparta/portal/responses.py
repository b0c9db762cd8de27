"""What the portal answers: entry JSON as skyd shapes it, JSON errors, and CORS on everything.

Every refusal is ``{"message": …}`` with the CORS headers, so browser pages can read why.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sdparta.store.base import RegistryEntry

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "skynet-skylink, skynet-portal-api, skynet-file-metadata, "
                                     "Content-Length, Content-Type",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, Skynet-Api-Key, Tus-Resumable",
    "Access-Control-Max-Age": "86400",
}


def error(status: int, message: str, retry_after: float | None = None) -> web.Response:
    """A JSON refusal; ``retry_after`` (seconds) becomes a ``Retry-After`` header."""
    headers = CORS_HEADERS
    if retry_after is not None:
        headers = {**CORS_HEADERS, "Retry-After": str(max(1, min(86400, int(retry_after + 0.999))))}
    return web.json_response({"message": message}, status=status, headers=headers)


def too_many(message: str, retry_after: float) -> web.Response:
    """429: the client treats it as "try later"; the message says what ran out."""
    return error(429, message, retry_after)


def entry_json(entry: RegistryEntry) -> dict[str, Any]:
    """A registry GET answer."""
    return {"data": entry.data.hex(), "revision": entry.revision, "signature": entry.signature.hex(), "type": 1}


def push_json(entry: RegistryEntry) -> dict[str, Any]:
    """A pushed entry: a GET answer that also names its slot."""
    return {"pubkey": "ed25519:" + entry.public_key.hex(), "datakey": entry.data_key.hex(), **entry_json(entry)}
