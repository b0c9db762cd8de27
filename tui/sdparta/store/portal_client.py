"""The Skynet portal HTTP API as a :class:`~sdparta.store.base.Store` (httpx; push over aiohttp ws).

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
import base64
import binascii
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from sdparta import safe_json
from sdparta.store.base import (
    MAX_ENTRY_DATA,
    InvalidEntry,
    RegistryEntry,
    RevisionConflict,
    StoreError,
    StoreUnavailable,
)
from sdparta.store.crypto import (
    DATA_KEY_LEN,
    MAX_REVISION,
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    content_matches,
    decode_skylink,
    verify_entry,
)
from sdparta.store.multi import UpdateMailbox

log = logging.getLogger(__name__)

#: A registry answer is ~400 bytes; anything much bigger is not one.
MAX_REGISTRY_RESPONSE = 4096
#: Upload answers and error bodies are small too.
MAX_SMALL_RESPONSE = 16 * 1024
DEFAULT_MAX_BLOB = 4 * 1024 * 1024
MAX_PUSH_MESSAGE = 16 * 1024
#: Overall deadline of one small request (registry read/write, upload answer), body included.
#: Generous for a slow or distant link (a registry round trip is ~100 ms even across continents).
REQUEST_DEADLINE = 10.0
#: Transfers that may be big get this much more time per byte they may carry (64 KiB/s, ~0.5 Mbit/s):
#: a 64 KiB signalling blob may take 11 s, a 4 MiB skyfile 74 s, never forever.
SLOW_LINK_BYTES_PER_S = 64 * 1024
#: The push websocket's handshake (TCP connect + HTTP upgrade answer) must be done within this.
HANDSHAKE_DEADLINE = 10.0
SUBSCRIPTION_PATH = "/skynet/registry/subscription"
#: Handshake answers that mean "this portal has no subscription endpoint" (as opposed to "down").
_NO_PUSH_STATUSES = {400, 401, 403, 404, 405, 426, 501}


def check_portal_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError with a usable message when it is not http(s)."""
    if not isinstance(url, str):
        raise ValueError("a portal URL must be a string such as http://127.0.0.1:8787")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not a portal URL: {url!r} (expected e.g. http://127.0.0.1:8787 or https://portal.example)")
    return url.strip().rstrip("/")


def _loads(raw: str | bytes) -> Any:
    """Registry answers, upload answers and pushes are a few hundred bytes of flat JSON: bounded
    nesting (safe_json), ValueError for anything else. Callers bound the size before parsing."""
    return safe_json.loads(raw, max_depth=8)


def _byte_candidates(value: Any, max_len: int) -> list[bytes]:
    """Every plausible decoding of a JSON byte field: skyd's GET uses hex, skynet-js sends arrays of
    numbers and Go encodes ``[]byte`` as base64. The signature check decides which one is right."""
    if isinstance(value, list):
        if len(value) <= max_len and all(type(b) is int and 0 <= b <= 255 for b in value):
            return [bytes(value)]
        return []
    if not isinstance(value, str) or len(value) > 4 * max_len + 4:
        return []
    found: list[bytes] = []
    with contextlib.suppress(ValueError):
        found.append(bytes.fromhex(value))
    std = value.replace("-", "+").replace("_", "/")
    with contextlib.suppress(binascii.Error, ValueError):
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
        if raw not in found:
            found.append(raw)
    return [raw for raw in found if len(raw) <= max_len]


def _parse_revision(value: Any) -> int:
    """A uint64 revision, given as a JSON number or (skyd) a decimal string."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_REVISION:
        raise InvalidEntry("registry answer has no valid uint64 revision")
    return value


def parse_entry(public_key: bytes, data_key: bytes, body: Any) -> RegistryEntry:
    """Validate a registry JSON answer (GET or push) for the slot we asked about, signature included."""
    if not isinstance(body, dict):
        raise InvalidEntry("registry answer is not a JSON object")
    revision = _parse_revision(body.get("revision"))
    kind = body.get("type")
    if kind is not None and not (isinstance(kind, int | float) and kind == 1):
        # no repr of an untrusted value: it may be huge or nested deep enough to overflow the stack
        shown = kind if type(kind) is int and abs(kind) < 10**6 else type(kind).__name__
        raise InvalidEntry(f"unsupported registry entry type {shown}")
    datas = _byte_candidates(body.get("data", ""), MAX_ENTRY_DATA)
    signatures = [s for s in _byte_candidates(body.get("signature"), SIGNATURE_LEN) if len(s) == SIGNATURE_LEN]
    if not signatures:
        raise InvalidEntry("registry answer has no 64-byte signature")
    for data in datas:
        for signature in signatures:
            entry = RegistryEntry(public_key, data_key, data, revision, signature)
            if verify_entry(entry):
                return entry
    raise InvalidEntry("registry entry signature does not verify for the requested key "
                       "(the portal is broken or lying; entry ignored)")


def _slot_of_push(body: Any) -> tuple[bytes, bytes] | None:
    """(public key, data key) named by a pushed message, or None when it names none."""
    if not isinstance(body, dict):
        return None
    pubkey, datakey = body.get("pubkey"), body.get("datakey")
    if not isinstance(pubkey, str) or not pubkey.startswith("ed25519:") or not isinstance(datakey, str):
        return None
    try:
        public_key, data_key = bytes.fromhex(pubkey[8:]), bytes.fromhex(datakey)
    except ValueError:
        return None
    if len(public_key) != PUBLIC_KEY_LEN or len(data_key) != DATA_KEY_LEN:
        return None
    return public_key, data_key


def _ws_url(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):] + SUBSCRIPTION_PATH
    return "ws://" + url[len("http://"):] + SUBSCRIPTION_PATH


class _NoPush(Exception):
    """The portal answered the websocket handshake with "no such endpoint"."""


class PortalSubscription:
    """The portal's registry subscription websocket.

    Pushed entries are verified and only delivered for subscribed slots. When the socket drops it
    reconnects with backoff and re-subscribes every slot; the portal then pushes the current values,
    so nothing written during the outage is missed (older or repeated revisions are dropped).
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0,
                 handshake_deadline: float = HANDSHAKE_DEADLINE) -> None:
        self.url = url
        self.ws_url = _ws_url(url)
        self._connect_timeout = connect_timeout
        self._handshake_deadline = handshake_deadline
        self._slots: set[tuple[bytes, bytes]] = set()
        self._mailbox = UpdateMailbox()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._retry_now = asyncio.Event()
        self.reconnects = 0
        self.rejected = 0  # pushes that failed verification

    async def _open_ws(self) -> aiohttp.ClientWebSocketResponse:
        """Connect and upgrade within the handshake deadline (TimeoutError otherwise): aiohttp
        bounds only the TCP connect, so a portal that never answers the upgrade would hang us."""
        assert self._session is not None
        try:
            async with asyncio.timeout(self._handshake_deadline):
                # a short close timeout: reconnect() closes sockets that may be dead (no reply ever comes)
                return await self._session.ws_connect(self.ws_url, heartbeat=15, max_msg_size=MAX_PUSH_MESSAGE,
                                                      autoclose=True, autoping=True,
                                                      timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in _NO_PUSH_STATUSES:
                raise _NoPush(f"portal {self.url} has no registry subscription endpoint ({exc.status})") from exc
            raise
        except TimeoutError as exc:
            raise TimeoutError(f"portal {self.url} did not complete the subscription handshake within "
                               f"{self._handshake_deadline:g} s") from exc

    async def connect(self) -> None:
        """Open the socket; raises _NoPush, or aiohttp/OS errors when the portal is unreachable."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                        sock_connect=self._connect_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._ws = await self._open_ws()
        self.connected.set()
        self._task = asyncio.create_task(self._reader())

    async def _send(self, action: str, public_key: bytes, data_key: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # (re-)subscribed by the reader once connected again
        try:
            # bounded: a portal that stops reading fills the socket buffer and a send waits on drain
            async with asyncio.timeout(self._handshake_deadline):
                await ws.send_json({"action": action, "pubkey": "ed25519:" + public_key.hex(),
                                    "datakey": data_key.hex()})
        except TimeoutError:
            log.info("subscription to %s: the portal does not take our messages; reconnecting", self.url)
            self.reconnect()  # the reader reopens the socket and re-subscribes every slot
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass

    async def add(self, public_key: bytes, data_key: bytes) -> None:
        if len(public_key) != PUBLIC_KEY_LEN or len(data_key) != DATA_KEY_LEN:
            raise ValueError("a slot is a 32-byte public key and a 32-byte hashed data key")
        if (public_key, data_key) in self._slots:
            return
        self._slots.add((public_key, data_key))
        await self._send("subscribe", public_key, data_key)

    async def remove(self, public_key: bytes, data_key: bytes) -> None:
        if (public_key, data_key) not in self._slots:
            return
        self._slots.discard((public_key, data_key))
        self._mailbox.forget((public_key, data_key))
        await self._send("unsubscribe", public_key, data_key)

    def updates(self) -> AsyncIterator[RegistryEntry]:
        return self._mailbox.updates()

    async def _reader(self) -> None:
        delay = 0.25
        while not self._mailbox.closed:
            ws = self._ws
            if ws is not None:
                try:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._handle(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
                except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                    log.info("subscription to %s dropped: %s", self.url, exc)
                self.connected.clear()
                delay = 0.25
            if self._mailbox.closed:
                break
            with contextlib.suppress(TimeoutError):  # dropped: reconnect (sooner when kicked), re-subscribe
                await asyncio.wait_for(self._retry_now.wait(), delay * (0.5 + random.random()))
            if self._retry_now.is_set():
                self._retry_now.clear()
                delay = 0.25
            delay = min(delay * 2, 10.0)
            try:
                self._ws = await self._open_ws()
            except (_NoPush, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("subscription to %s: reconnect failed: %s", self.url, exc)
                self._ws = None
                continue
            self.reconnects += 1
            self.connected.set()
            for public_key, data_key in list(self._slots):
                await self._send("subscribe", public_key, data_key)

    def reconnect(self) -> None:
        """Drop the socket (it may be dead without knowing it) and reopen it at once."""
        self._retry_now.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            asyncio.get_running_loop().create_task(ws.close())

    def _handle(self, raw: str) -> None:
        """One pushed text message: delivered when it is a verified entry of a subscribed slot,
        otherwise counted (``rejected``) or ignored. Never raises on what the portal sends."""
        if not isinstance(raw, str) or len(raw) > MAX_PUSH_MESSAGE:
            return
        try:
            body = _loads(raw)
        except ValueError:
            self.rejected += 1
            return
        if isinstance(body, dict) and body.get("error"):
            error = body["error"]
            log.info("portal %s subscription error: %.200s", self.url,
                     error if isinstance(error, str) else type(error).__name__)
            return
        slot = _slot_of_push(body)
        if slot is None or slot not in self._slots:
            return  # a push we did not ask for is ignored
        try:
            entry = parse_entry(slot[0], slot[1], body)
        except InvalidEntry as exc:
            self.rejected += 1
            log.warning("portal %s pushed an invalid entry: %s", self.url, exc)
            return
        self._mailbox.put(entry)

    @property
    def closed(self) -> bool:
        """Closed for good (aclose), not merely disconnected."""
        return self._mailbox.closed

    async def aclose(self) -> None:
        """Close the socket, the reader and the HTTP session (always all three: an aiohttp session
        left open is reported as "Unclosed client session" when it is collected)."""
        self._mailbox.close()
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._ws.close(), 2.0)
        finally:
            if self._session is not None and not self._session.closed:
                await self._session.close()


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
        if len(public_key) != PUBLIC_KEY_LEN or len(data_key) != DATA_KEY_LEN:
            raise ValueError("a slot is a 32-byte public key and a 32-byte hashed data key")
        status, body = await self._call(
            "GET", "/skynet/registry", MAX_REGISTRY_RESPONSE, "registry read",
            params={"publickey": "ed25519:" + public_key.hex(), "datakey": data_key.hex()})
        if status == 404:
            return None
        if status != 200:
            raise StoreError(f"portal {self.url} refused the registry read ({status}): {_message(body, status)}")
        try:
            parsed = _loads(body)
        except ValueError as exc:
            raise InvalidEntry(f"portal {self.url} sent a registry answer that is not JSON") from exc
        if isinstance(parsed, dict) and ("pubkey" in parsed or "datakey" in parsed) and \
                _slot_of_push(parsed) != (public_key, data_key):
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
            skylink = _loads(answer)["skylink"]
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
        except _NoPush as exc:
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
        parsed = _loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            text = parsed["message"]
    except ValueError:
        text = bytes(body[:300]).decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()[:300]
    return text or f"HTTP {status}"
