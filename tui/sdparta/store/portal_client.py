"""The Skynet portal HTTP API as a :class:`~sdparta.store.base.Store` (httpx; push: ``store/push.py``).

Every byte from the portal is untrusted: responses are read with a size bound, registry entries are
signature-checked against the slot that was asked for, and downloads are checked against the
content hash inside the skylink. Request/response shapes follow skynet-js 4.x and skyd:

- ``GET  /skynet/registry?publickey=ed25519:<hex>&datakey=<hex>`` → ``{"data": hex, "revision": n,
  "signature": hex, "type": 1}``, 404 when the slot is empty;
- ``POST /skynet/registry`` with ``{"publickey": {"algorithm": "ed25519", "key": [32 bytes]},
  "datakey": hex, "revision": n, "data": [bytes], "signature": [64 bytes]}`` → 204;
- ``POST /skynet/skyfile`` (multipart field ``file``) → ``{"skylink": …}``; ``GET /<skylink>``;
- ``/skynet/registry/subscription`` websocket: ``{"action": "subscribe"|"unsubscribe",
  "pubkey": "ed25519:<hex>", "datakey": hex}``; pushes carry ``pubkey``, ``datakey``, ``data``,
  ``revision``, ``signature`` (and ``type``).

Every network wait has an overall deadline, not only a per-read timeout: a portal that accepts
connections and never answers, or drips one byte every few seconds, costs a bounded time and is
reported as "not answering" (StoreUnavailable) instead of hanging a join.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from sdparta.store.base import (
    DEFAULT_MAX_BLOB,
    InvalidEntry,
    RegistryEntry,
    RevisionConflict,
    StoreError,
    StoreUnavailable,
)
from sdparta.store.crypto import check_slot, content_matches, decode_skylink
from sdparta.store.portal_json import loads, parse_entry, slot_of_push
from sdparta.store.push import HANDSHAKE_DEADLINE, NoPush, PortalSubscription

log = logging.getLogger(__name__)

#: A registry answer is ~400 bytes; anything much bigger is not one.
MAX_REGISTRY_RESPONSE = 4096
#: Upload answers and error bodies are small too.
MAX_SMALL_RESPONSE = 16 * 1024
#: Overall deadline of one small request (registry read/write, upload answer), body included.
#: Generous for a slow or distant link (a registry round trip is ~100 ms even across continents).
REQUEST_DEADLINE = 10.0
#: Transfers that may be big get this much more time per byte they may carry (64 KiB/s, ~0.5 Mbit/s):
#: a 64 KiB signalling blob may take 11 s, a 4 MiB skyfile 74 s, never forever.
SLOW_LINK_BYTES_PER_S = 64 * 1024


def check_portal_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError with a usable message when it is not http(s)."""
    if not isinstance(url, str):
        raise ValueError("a portal URL must be a string such as http://127.0.0.1:8787")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not a portal URL: {url!r} (expected e.g. http://127.0.0.1:8787 or https://portal.example)")
    return url.strip().rstrip("/")


class PortalClient:
    """One Skynet-API portal (sdparta's own or any compatible one).

    ``timeout`` bounds each network phase (connect, one read, one write: httpx); ``deadline`` bounds
    a whole small request, body included, and grows with the size of bigger transfers
    (SLOW_LINK_BYTES_PER_S); ``handshake_deadline`` bounds opening the push websocket.
    """

    def __init__(self, url: str, *, http: httpx.AsyncClient | None = None, timeout: float = 5.0,
                 deadline: float | None = None, handshake_deadline: float | None = None) -> None:
        self.url = check_portal_url(url)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=32),
                                              follow_redirects=False)
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else max(REQUEST_DEADLINE, 2 * timeout)
        self.handshake_deadline = (handshake_deadline if handshake_deadline is not None
                                   else max(HANDSHAKE_DEADLINE, 2 * timeout))
        self._push_supported: bool | None = None
        # every push channel opened here, closed by aclose() even if its owner dropped it
        self._subscriptions: set[PortalSubscription] = set()

    def __repr__(self) -> str:
        return f"PortalClient({self.url!r})"

    # ------------------------------------------------------------------ plumbing
    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            # connected, then silence: the portal (or something in front of it) is stuck, not absent
            return StoreUnavailable(f"portal {self.url} is not answering (nothing received for "
                                    f"{self.timeout:g} s); try again later or add another --portal")
        return StoreUnavailable(f"portal {self.url} is unreachable ({type(exc).__name__}: {exc}); "
                                "check the URL and that it is running (start one with `sdparta portal`)")

    def _not_answering(self, deadline: float) -> StoreUnavailable:
        return StoreUnavailable(f"portal {self.url} is not answering (no complete answer within {deadline:g} s): "
                                "it accepts connections but does not reply; try again later or add another "
                                "--portal")

    def _deadline_for(self, size: int) -> float:
        """The overall deadline of a request that may move ``size`` bytes."""
        return self.deadline + size / SLOW_LINK_BYTES_PER_S

    async def _call(self, method: str, path: str, limit: int, what: str, *, deadline: float | None = None,
                    **kwargs: Any) -> tuple[int, bytes]:
        """One request; (status, body read up to ``limit`` bytes), all of it within ``deadline``
        (default: the client's small-request deadline). Transport errors, a missed deadline and
        overloaded portals (5xx, 408, 429) are StoreUnavailable; a longer body is InvalidEntry."""
        deadline = self.deadline if deadline is None else deadline
        try:
            async with asyncio.timeout(deadline):
                # identity encoding: a compressed answer could expand far past the bound per chunk
                headers = {"Accept-Encoding": "identity", **kwargs.pop("headers", {})}
                async with self.http.stream(method, self.url + path, headers=headers, **kwargs) as response:
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise InvalidEntry(f"portal {self.url} sent a {what} answer of {declared} bytes "
                                           f"(limit {limit})")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise InvalidEntry(f"portal {self.url} sent a {what} answer over {limit} bytes")
                        chunks.append(chunk)
                    status = response.status_code
        except TimeoutError as exc:
            raise self._not_answering(deadline) from exc
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        body = b"".join(chunks)
        if status >= 500 or status in (408, 429):
            raise StoreUnavailable(f"portal {self.url} answered {status} to the {what} "
                                   f"({_message(body, status)}); try again later or add another --portal")
        return status, body

    # ------------------------------------------------------------------ registry
    async def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        check_slot(public_key, data_key)
        status, body = await self._call(
            "GET", "/skynet/registry", MAX_REGISTRY_RESPONSE, "registry read",
            params={"publickey": "ed25519:" + public_key.hex(), "datakey": data_key.hex()})
        if status == 404:
            return None
        if status != 200:
            raise StoreError(f"portal {self.url} refused the registry read ({status}): {_message(body, status)}")
        try:
            parsed = loads(body)
        except ValueError as exc:
            raise InvalidEntry(f"portal {self.url} sent a registry answer that is not JSON") from exc
        if isinstance(parsed, dict) and ("pubkey" in parsed or "datakey" in parsed) and \
                slot_of_push(parsed) != (public_key, data_key):
            raise InvalidEntry(f"portal {self.url} answered with an entry of another slot")
        try:
            return parse_entry(public_key, data_key, parsed)
        except InvalidEntry as exc:
            raise InvalidEntry(f"portal {self.url}: {exc}") from None

    async def set_entry(self, entry: RegistryEntry) -> None:
        body = {"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)},
                "datakey": entry.data_key.hex(), "revision": entry.revision,
                "data": list(entry.data), "signature": list(entry.signature)}
        status, answer = await self._call("POST", "/skynet/registry", MAX_SMALL_RESPONSE, "registry write",
                                          json=body)
        if status in (200, 204):
            return
        message = _message(answer, status)
        if status == 400 and "revision" in message.lower():
            raise RevisionConflict(f"portal {self.url}: {message}")
        raise StoreError(f"portal {self.url} refused the registry write ({status}): {message}")

    # ------------------------------------------------------------------ blobs
    async def upload_blob(self, data: bytes) -> str:
        status, answer = await self._call("POST", "/skynet/skyfile", MAX_SMALL_RESPONSE, "upload",
                                          deadline=self._deadline_for(len(data)),
                                          files={"file": ("blob", data, "application/octet-stream")})
        if status != 200:
            raise StoreError(f"portal {self.url} refused the upload ({status}): {_message(answer, status)}")
        try:
            skylink = loads(answer)["skylink"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidEntry(f"portal {self.url} sent a malformed upload answer") from exc
        if not isinstance(skylink, str) or not content_matches(skylink, data):
            raise InvalidEntry(f"portal {self.url} returned a skylink that does not name the uploaded "
                               "content (not a content-addressing sdparta portal?)")
        return skylink

    async def download_blob(self, skylink: str, max_size: int = DEFAULT_MAX_BLOB) -> bytes:
        decode_skylink(skylink)  # never put an unchecked string into the URL path
        status, data = await self._call("GET", "/" + skylink, max_size, f"skyfile {skylink}",
                                        deadline=self._deadline_for(max_size))
        if status == 404:
            raise StoreError(f"skyfile {skylink} is not on portal {self.url} (expired or never uploaded)")
        if status != 200:
            raise StoreError(f"portal {self.url} refused the download ({status}): {_message(data, status)}")
        if not content_matches(skylink, data):
            raise InvalidEntry(f"skyfile from {self.url} does not match its skylink (content ignored)")
        return data

    # ------------------------------------------------------------------ push
    async def open_subscription(self) -> PortalSubscription | None:
        """The portal's push channel, or None: when it has none (remembered) or is unreachable now."""
        if self._push_supported is False:
            return None
        subscription = PortalSubscription(self.url, connect_timeout=self.timeout,
                                          handshake_deadline=self.handshake_deadline)
        try:
            await subscription.connect()
        except NoPush as exc:
            log.info("%s; polling instead", exc)
            self._push_supported = False
            await subscription.aclose()
            return None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("portal %s: no push for now (%s); polling instead", self.url, exc)
            await subscription.aclose()
            return None
        except BaseException:  # cancelled (the join was stopped) or a bug: never leak the session
            await asyncio.shield(subscription.aclose())
            raise
        self._push_supported = True
        self._subscriptions = {s for s in self._subscriptions if not s.closed} | {subscription}
        return subscription

    async def aclose(self) -> None:
        """Close every push channel opened here that is still open, then the HTTP client."""
        subscriptions, self._subscriptions = list(self._subscriptions), set()
        try:
            await asyncio.gather(*(s.aclose() for s in subscriptions if not s.closed), return_exceptions=True)
        finally:
            if self._own_http:
                await self.http.aclose()


def _message(body: bytes, status: int) -> str:
    """The portal's error message (skyd: ``{"message": …}``), shortened and printable."""
    text = ""
    try:
        parsed = loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            text = parsed["message"]
    except ValueError:
        text = bytes(body[:300]).decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()[:300]
    return text or f"HTTP {status}"
