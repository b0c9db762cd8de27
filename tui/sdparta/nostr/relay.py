"""One Nostr relay: publish with OK, subscriptions re-sent on reconnect, every received event verified.

Why it is shaped this way:
- relays are not trusted: every received event is verified (id and signature — the PyPI
  ``nostr-relay`` checks neither ids nor, on the way out, anything) and must match the subscription it
  came on; bad ones are dropped and counted, and a hostile relay's junk never raises;
- relays are shared infrastructure: we keep within NIP-11 limits, back off exponentially on
  ``rate-limited:`` (held-back events are re-sent by us later, newest version of a record only) and stop
  using a relay that says ``blocked:``/``restricted:``/``auth-required:``/``pow:`` — Trystero's endless
  announces got it blocked by relay operators;
- a publish waits for its OK until a deadline (a missing OK is a failure) and is re-sent on the next
  connection when the current one drops first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sdparta.nostr.connection import DEFAULT_TIMEOUTS, RelayConnection, RelayTimeouts
from sdparta.nostr.event import DEFAULT_LIMITS, Event, EventLimits, InvalidEvent, filters_match, verify_event
from sdparta.nostr.info import HARD_MAX_MESSAGE
from sdparta.nostr.messages import (
    REFUSING_PREFIXES,
    AuthMessage,
    ClosedMessage,
    EoseMessage,
    EventMessage,
    MalformedMessage,
    NoticeMessage,
    OkMessage,
    close_message,
    event_message,
    parse_relay_message,
    req_message,
)
from sdparta.nostr.retry import Backoff, RetryQueue
from sdparta.nostr.state import EventTooLarge, PublishResult, PublishStatus, RelayState, RelayStatus, SubscriptionLimit

log = logging.getLogger(__name__)

EventSink = Callable[[str, Event, str], None]  # (sub_id, verified event, relay url)
EoseSink = Callable[[str, str], None]  # (sub_id, relay url)

__all__ = ["EoseSink", "EventSink", "Relay", "RelayTimeouts"]


class _Disconnected(Exception):
    """The connection went away while a publish waited for its OK (it is re-sent on the next one)."""


@dataclass
class _Sub:
    filters: list[dict[str, Any]]
    eose: bool = False
    closed_reason: str | None = None
    retry_at: float | None = None
    backoff: Backoff | None = None


class Relay(RelayConnection):
    """The NIP-01 client for one relay URL. ``on_event(sub_id, event, url)`` gets verified events only."""

    def __init__(self, url: str, *, on_event: EventSink | None = None, on_eose: EoseSink | None = None,
                 on_state: Callable[[RelayStatus], None] | None = None,
                 on_crash: Callable[[str, str], None] | None = None, timeouts: RelayTimeouts = DEFAULT_TIMEOUTS,
                 event_limits: EventLimits = DEFAULT_LIMITS, max_incoming: int = HARD_MAX_MESSAGE) -> None:
        super().__init__(url, on_state=on_state, on_crash=on_crash, timeouts=timeouts, max_incoming=max_incoming)
        self._on_event, self._on_eose = on_event, on_eose
        self.event_limits = event_limits
        self._last_notice: str | None = None
        self._wake = asyncio.Event()  # the timer loop: something became due
        self._subs: dict[str, _Sub] = {}
        self._pending: OrderedDict[str, list[asyncio.Future[OkMessage]]] = OrderedDict()
        self._retry = RetryQueue()
        self._rate = Backoff(*timeouts.rate_limit)
        self._ok_timeout_streak = 0

    def status(self) -> RelayStatus:
        """A frozen snapshot, readable synchronously (UI, bot report, doctor)."""
        return RelayStatus(self.url, self._state, self._reason, MappingProxyType(self.counters.frozen()), self.info,
                           self.limits, tuple(self._subs), len(self._retry), self._last_notice)

    def subscription_state(self, sub_id: str) -> tuple[bool, str | None] | None:
        """(end of stored events seen, why the relay closed it) for one subscription; None if unknown."""
        sub = self._subs.get(sub_id)
        return None if sub is None else (sub.eose, sub.closed_reason)

    def _loops(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [*super()._loops(), ("nostr relay timers", self._timers)]

    # ------------------------------------------------------------------ connection hooks
    def _on_open(self) -> None:
        for sub_id in list(self._subs):  # taken with _ws set: later subscribe() calls send themselves
            self._send_req(sub_id)
        self._wake.set()  # flush held-back events

    def _on_lost(self) -> None:
        pending, self._pending = self._pending, OrderedDict()
        for futures in pending.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(_Disconnected())
        if self._stopping():
            self._retry.clear()
        self._wake.set()

    def _on_text(self, text: str) -> None:
        """One text message from the relay; never raises (a bug of ours is reported and counted)."""
        try:
            try:
                msg = parse_relay_message(text)
            except MalformedMessage:
                self.counters.malformed += 1
                return
            if isinstance(msg, EventMessage):
                self._handle_event(msg)
            elif isinstance(msg, OkMessage):
                self._handle_ok(msg)
            elif isinstance(msg, EoseMessage):
                sub = self._subs.get(msg.sub_id)
                if sub is not None and not sub.eose:
                    sub.eose, sub.backoff = True, None
                    if self._on_eose is not None:
                        self._on_eose(msg.sub_id, self.url)
            elif isinstance(msg, ClosedMessage):
                self._handle_closed(msg)
            elif isinstance(msg, NoticeMessage):
                self._handle_notice(msg)
            elif isinstance(msg, AuthMessage):
                log.info("relay %s asks for NIP-42 auth; we do not authenticate", self.url)
        except Exception as exc:
            log.exception("relay %s: handling a message failed", self.url)
            self._crash("nostr relay message handler", f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ incoming
    def _handle_event(self, msg: EventMessage) -> None:
        sub = self._subs.get(msg.sub_id)
        if sub is None:
            self.counters.unrequested += 1
            return
        try:
            event = verify_event(msg.event, self.event_limits)
        except InvalidEvent as exc:
            self.counters.invalid_dropped += 1
            self.counters.invalid_reasons[exc.reason] += 1
            log.debug("relay %s sent an invalid event: %s", self.url, exc)
            return
        if not filters_match(sub.filters, event):
            self.counters.unrequested += 1
            return
        self.counters.events_received += 1
        if self._on_event is not None:
            self._on_event(msg.sub_id, event, self.url)

    def _handle_ok(self, msg: OkMessage) -> None:
        futures = self._pending.pop(msg.event_id, None)
        if futures is None and not msg.accepted and self._pending:
            # nostr-relay 1.14 answers an EVENT it refused with an empty id; it answers in order, so
            # the refusal is for the oldest EVENT still waiting
            futures = self._pending.pop(next(iter(self._pending)))
        for fut in futures or ():
            if not fut.done():
                fut.set_result(msg)

    def _handle_closed(self, msg: ClosedMessage) -> None:
        sub = self._subs.get(msg.sub_id)
        if sub is None:
            return
        prefix = msg.prefix
        self.counters.closed_subscriptions += 1
        self.counters.rejected[prefix or "closed"] += 1
        log.info("relay %s closed subscription %s: %s", self.url, msg.sub_id, msg.message)
        if prefix in REFUSING_PREFIXES:
            self.refuse(msg.message)
        elif prefix != "duplicate":
            sub.closed_reason = msg.message or "closed by the relay"
            if prefix not in ("invalid", "unsupported"):  # error:, rate-limited:, …: ask again later
                self._schedule_resubscribe(sub)

    def _handle_notice(self, msg: NoticeMessage) -> None:
        self.counters.notices += 1
        self._last_notice = msg.message
        log.info("relay %s NOTICE: %s", self.url, msg.message)
        if msg.message.lower().startswith("rate-limited"):  # how nostr-relay answers a REQ it limited
            for sub in self._subs.values():
                if not sub.eose and sub.closed_reason is None:
                    self._schedule_resubscribe(sub)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, sub_id: str, filters: Sequence[Mapping[str, Any]]) -> None:
        """Open (or replace) subscription ``sub_id``; it is re-sent after every reconnect.

        Raises ValueError (bad id or filters), SubscriptionLimit, EventTooLarge (REQ too long)."""
        limits = self.limits
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= limits.max_subid_length:
            raise ValueError(f"a subscription id has 1..{limits.max_subid_length} characters")
        flts = [dict(f) for f in filters]
        if not flts or (limits.max_filters is not None and len(flts) > limits.max_filters):
            raise ValueError(f"a subscription needs 1..{limits.max_filters or 'any number of'} filters")
        if sub_id not in self._subs and len(self._subs) >= limits.max_subscriptions:
            raise SubscriptionLimit(f"{self.url} allows {limits.max_subscriptions} subscriptions per connection")
        size = len(req_message(sub_id, flts).encode())
        if size > limits.max_message_length:
            raise EventTooLarge(f"REQ of {size} bytes > {self.url}'s max_message_length {limits.max_message_length}")
        self._subs[sub_id] = _Sub(flts)
        if self._ws is not None:
            self._send_req(sub_id)

    def close_subscription(self, sub_id: str) -> None:
        if self._subs.pop(sub_id, None) is not None and self._ws is not None:
            self._spawn(self._send_text(close_message(sub_id)))

    def _send_req(self, sub_id: str) -> None:
        sub = self._subs[sub_id]
        sub.eose, sub.closed_reason, sub.retry_at = False, None, None
        self.counters.subscriptions_sent += 1
        self._spawn(self._send_text(req_message(sub_id, sub.filters)))

    def _schedule_resubscribe(self, sub: _Sub) -> None:
        if sub.backoff is None:
            sub.backoff = Backoff(*self.timeouts.resubscribe)
        sub.retry_at = asyncio.get_running_loop().time() + sub.backoff.next()
        self._wake.set()

    # ------------------------------------------------------------------ publishing
    def check_fits(self, event: Event) -> None:
        """EventTooLarge when ``event`` is beyond this relay's advertised (or assumed) limits."""
        limits = self.limits
        size = len(event_message(event).encode())
        if size > limits.max_message_length:
            raise EventTooLarge(f"event of {size} bytes > {self.url}'s max_message_length {limits.max_message_length}")
        if limits.max_content_length is not None and len(event.content) > limits.max_content_length:
            raise EventTooLarge(f"content of {len(event.content)} characters > {self.url}'s max_content_length "
                                f"{limits.max_content_length}")
        if limits.max_event_tags is not None and len(event.tags) > limits.max_event_tags:
            raise EventTooLarge(f"{len(event.tags)} tags > {self.url}'s max_event_tags {limits.max_event_tags}")

    async def publish(self, event: Event, *, timeout: float | None = None) -> PublishResult:
        """Send ``event`` and wait for the relay's OK (until ``timeout``, default ``timeouts.ok``).

        Raises EventTooLarge (then nothing is sent). While a ``rate-limited:`` backoff runs the event is
        held back and re-sent later by this client (RATE_LIMITED); a refusing relay gives REFUSED."""
        self.check_fits(event)
        if self._stopping():
            return self._final(event)
        loop = asyncio.get_running_loop()
        if self._rate.until > loop.time():
            self._retry.put(event)
            return PublishResult(self.url, event.id, PublishStatus.RATE_LIMITED, "held back: rate-limited")
        return await self._send_event(event, loop.time() + (self.timeouts.ok if timeout is None else timeout))

    def _final(self, event: Event) -> PublishResult:
        status = PublishStatus.REFUSED if self._state == RelayState.REFUSED else PublishStatus.CLOSED
        return PublishResult(self.url, event.id, status, self._reason or "")

    async def _send_event(self, event: Event, deadline: float) -> PublishResult:
        loop = asyncio.get_running_loop()
        while True:
            if self._stopping():
                return self._final(event)
            if not await self.wait_open(deadline - loop.time()):
                if self._stopping():
                    return self._final(event)
                self.counters.ok_timeouts += 1
                return PublishResult(self.url, event.id, PublishStatus.TIMEOUT,
                                     f"not connected in time ({self._state}: {self._reason})")
            fut: asyncio.Future[OkMessage] = loop.create_future()
            self._pending.setdefault(event.id, []).append(fut)
            self.counters.events_sent += 1
            if not await self._send_text(event_message(event)):
                continue
            try:
                ok = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except _Disconnected:
                continue  # re-sent on the next connection, within the deadline
            except TimeoutError:
                self.counters.ok_timeouts += 1
                self._ok_timeout_streak += 1
                if self._ok_timeout_streak >= 2:  # two missing OKs in a row: the connection may be half-dead
                    self.reconnect()
                return PublishResult(self.url, event.id, PublishStatus.TIMEOUT, "no OK from the relay in time")
            self._ok_timeout_streak = 0
            return self._outcome(event, ok)

    def _outcome(self, event: Event, ok: OkMessage) -> PublishResult:
        prefix = ok.prefix
        if ok.accepted or prefix == "duplicate":
            duplicate = prefix == "duplicate"
            self.counters.duplicates += duplicate
            self.counters.accepted += not duplicate
            self._rate.reset()
            status = PublishStatus.DUPLICATE if duplicate else PublishStatus.ACCEPTED
            return PublishResult(self.url, event.id, status, ok.message)
        self.counters.rejected[prefix or "unprefixed"] += 1
        if prefix == "rate-limited":
            self._rate.until = asyncio.get_running_loop().time() + self._rate.next()
            self._retry.put(event)
            self._wake.set()
            return PublishResult(self.url, event.id, PublishStatus.RATE_LIMITED, ok.message)
        if prefix in REFUSING_PREFIXES:
            self.refuse(ok.message)
            return PublishResult(self.url, event.id, PublishStatus.REFUSED, ok.message)
        return PublishResult(self.url, event.id, PublishStatus.REJECTED, ok.message)

    # ------------------------------------------------------------------ timers
    async def _timers(self) -> None:
        """Re-send held-back events once the rate-limit backoff is over; re-REQ subscriptions it closed."""
        loop = asyncio.get_running_loop()
        while not self._stopping():
            now = loop.time()
            due = [t for t in (self._rate.until if self._retry else None,
                               *(sub.retry_at for sub in self._subs.values())) if t is not None]
            self._wake.clear()
            if not due or min(due) > now:
                timeout = min(due) - now if due else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            if not self.is_open:
                await self.wait_open(5.0)
                continue
            for sub_id, sub in list(self._subs.items()):
                if sub.retry_at is not None and sub.retry_at <= now:
                    self._send_req(sub_id)
            if self._retry and self._rate.until <= now:
                event = self._retry.pop()
                result = await self._send_event(event, loop.time() + self.timeouts.ok)
                log.info("relay %s: held-back event %s… re-sent: %s %s", self.url, event.id[:12], result.status,
                         result.message)
