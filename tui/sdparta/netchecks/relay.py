"""Nostr relay: reachable, NIP-11 limits, a probe event published and read back, and whether it refuses us.

Why a probe and not just a connect: a relay that accepts websockets may still refuse every event we
send (``blocked:``, ``restricted:``, ``auth-required:``, ``pow:``), rate-limit us, or accept events and
never serve them to a subscriber; and its NIP-11 limits may be too small for a call's sealed offer.
Only a publish and a read-back on a subscription, through the same :class:`~sdparta.nostr.Relay`
client a call uses, shows all of that. The probe is what a room's records look like to a relay: a
NIP-78 addressable event (kind 30078) of a fresh key with random ``d``/``x`` tags and a few random
characters, expiring (NIP-40) after ten minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from sdparta.netchecks.check import Check
from sdparta.nostr import (
    APP_DATA_KIND,
    Event,
    EventTooLarge,
    NostrKey,
    PublishResult,
    PublishStatus,
    Relay,
    RelayInfo,
    RelayState,
    RelayTimeouts,
    make_filter,
    relay_url,
)

#: The biggest thing a call sends through a relay: a sealed aiortc offer (audio + video + data
#: channel), base64, is about 8 KB of event content.
SEALED_OFFER_CHARS = 8 * 1024
#: How long a relay may keep the probe (NIP-40 ``expiration``): it is of no use to anyone afterwards.
PROBE_LIFETIME_S = 600
#: OK/CLOSED prefixes that a doctor reports as "this relay refuses us" (rate-limited: too, for now).
REFUSAL_PROBLEMS = ("refused", "rate-limited")


def relay_fix(url: str) -> str:
    """The fix for a relay we cannot use: another relay, or this one out of the config."""
    return (f"use another relay (`--relay wss://…`), or remove {url} from `relays = [...]` in the config "
            "(or leave out its --relay)")


class _Probe:
    """Callbacks of the relay client, timed: when the probe came back, when the stored events ended."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.probe_id: str | None = None
        self.read_back_at: float | None = None
        self.eose = False

    def on_event(self, sub_id: str, event: Event, url: str) -> None:
        if event.id == self.probe_id and self.read_back_at is None:
            self.read_back_at = time.monotonic()
        self.changed.set()

    def on_eose(self, sub_id: str, url: str) -> None:
        self.eose = True
        self.changed.set()

    def on_state(self, status: Any) -> None:
        self.changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait (woken by the callbacks) until ``condition`` holds; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True


def _offer_sized_event(key: NostrKey) -> Event:
    """An event the size of a call's biggest message, to ask the relay's limits whether it fits."""
    return key.addressable(os.urandom(32).hex(), "A" * SEALED_OFFER_CHARS, [("x", os.urandom(32).hex())])


def limits_facts(info: RelayInfo | None) -> dict[str, Any]:
    """What the relay says about itself (NIP-11), for the report; the limits are the ones we keep to
    (``advertised`` false: the relay gave none, these are our assumptions)."""
    if info is None:
        return {"nip11": False, "nip11_error": "not read", "limits": {}}
    limits = info.limits
    return {"nip11": info.error is None, "nip11_error": info.error, "relay_name": info.name or None,
            "software": info.software or None, "version": info.version or None,
            "limits": {"max_message_length": limits.max_message_length, "max_content_length": limits.max_content_length,
                       "max_subscriptions": limits.max_subscriptions, "advertised": limits.advertised,
                       "auth_required": info.auth_required, "payment_required": info.payment_required,
                       "restricted_writes": info.restricted_writes}}


def describe_limits(info: RelayInfo | None) -> str:
    """One phrase: who the relay is and its limits (or that it publishes none)."""
    if info is None or info.error is not None:
        why = info.error if info is not None else "not read"
        return f"no NIP-11 document ({why}): limits unknown, 64 KiB events assumed"
    who = " ".join(part for part in (info.software.rsplit("/", 1)[-1], info.version) if part)
    name = f"{info.name!r}" + (f" ({who})" if who else "") if info.name else who or "unnamed relay"
    limits = info.limits
    flags = [flag for flag, on in (("auth_required", info.auth_required), ("payment_required", info.payment_required),
                                   ("restricted_writes", info.restricted_writes)) if on]
    if not limits.advertised and not flags:
        return f"{name}; NIP-11 gives no limits (64 KiB events assumed)"
    parts = [f"max_message_length {limits.max_message_length}",
             f"max_content_length {limits.max_content_length or '—'}", f"max_subscriptions {limits.max_subscriptions}"]
    return f"{name}; limits: {', '.join(parts + flags)}"


def would_refuse(info: RelayInfo | None, relay: Relay, key: NostrKey) -> list[str]:
    """What in the relay's NIP-11 document would refuse a call of ours (empty: nothing does)."""
    if info is None:
        return []
    reasons = []
    if info.refusal is not None:
        reasons.append(info.refusal)
    if info.restricted_writes:
        reasons.append("restricted_writes: it accepts events only from some users")
    try:
        relay.check_fits(_offer_sized_event(key))
    except EventTooLarge as exc:
        reasons.append(f"a call's messages will not fit: a sealed offer is ~{SEALED_OFFER_CHARS // 1024} KB "
                       f"base64, and {exc}")
    return reasons


def _publish_problem(url: str, result: PublishResult, timeout: float) -> tuple[str, str, str]:
    """(problem, detail, fix) for a probe the relay did not accept."""
    message = result.message or "no reason given"
    if result.status == PublishStatus.REFUSED:
        return ("refused", f"refuses our events ({message})", relay_fix(url))
    if result.status == PublishStatus.RATE_LIMITED:
        return ("rate-limited", f"rate-limits us already ({message})",
                "wait a minute and run doctor again; if it stays so, " + relay_fix(url))
    if result.status == PublishStatus.TIMEOUT:
        return ("no-ok", f"no OK for the probe within {timeout:g} s ({message}): a missing OK counts as a failure",
                "retry with a longer --timeout; if it stays so, " + relay_fix(url))
    return ("rejected", f"rejected the probe ({result.status}: {message})", relay_fix(url))


async def check_relay(url: str, *, timeout: float = 5.0) -> Check:
    """Connect (NIP-11 read alongside), subscribe to a random probe tag, publish a probe and wait for
    its OK and for it to come back on the subscription; the round trip is publish → read back."""
    try:
        url = relay_url(url)
    except ValueError as exc:
        return Check("relay", url, "bad-url", str(exc),
                     facts={"finding": str(exc), "fix": "give a relay URL like wss://relay.example.org"})
    probe = _Probe()
    # one connect attempt (dead at once when it fails), no reconnect while we look
    timeouts = RelayTimeouts(connect=timeout, info=timeout * 0.8, ok=timeout, backoff=(60.0, 60.0), dead_after=1)
    relay = Relay(url, on_event=probe.on_event, on_eose=probe.on_eose, on_state=probe.on_state, timeouts=timeouts)
    key = NostrKey()
    tag = os.urandom(16).hex()
    started = time.monotonic()
    try:
        await relay.start()
        await probe.until(lambda: relay.state in (RelayState.OPEN, RelayState.DEAD, RelayState.REFUSED), timeout * 1.5)
        connect_ms = (time.monotonic() - started) * 1000
        facts: dict[str, Any] = {**limits_facts(relay.info), "connect_ms": round(connect_ms, 1)}
        refusals = would_refuse(relay.info, relay, key)
        facts["would_refuse"] = refusals
        if relay.state == RelayState.REFUSED:
            detail = f"refuses us: {relay.reason}"
            return Check("relay", url, "refused", detail, facts={**facts, "finding": detail, "fix": relay_fix(url)})
        if relay.state != RelayState.OPEN:
            detail = f"unreachable ({relay.reason or 'no connection'})"
            return Check("relay", url, "unreachable", detail, facts={**facts, "finding": detail,
                         "fix": "check the URL (ws:// or wss://, host and port) and that the relay "
                                             "is running; or " + relay_fix(url)})
        relay.subscribe("doctor-" + tag[:16], [make_filter(kinds=[APP_DATA_KIND], authors=[key.pubkey],
                                                           tags={"x": [tag]})])
        # wait for the end of stored events, so the probe comes back live, not as a stored event
        await probe.until(lambda: probe.eose or relay.state != RelayState.OPEN, timeout)
        facts["eose"] = probe.eose
        now = int(time.time())
        event = key.addressable(os.urandom(16).hex(), os.urandom(8).hex(),
                                [("x", tag), ("expiration", str(now + PROBE_LIFETIME_S))], created_at=now)
        probe.probe_id = event.id
        sent = time.monotonic()
        result = await relay.publish(event, timeout=timeout)
        facts["ok_ms"] = round((time.monotonic() - sent) * 1000, 1)
        facts["publish"] = str(result.status)
        facts["reason"] = result.message or None
        if not result.ok:
            problem, detail, fix = _publish_problem(url, result, timeout)
            return Check("relay", url, problem, f"{detail}; {describe_limits(relay.info)}",
                         facts={**facts, "finding": detail, "fix": fix})
        read_back = await probe.until(lambda: probe.read_back_at is not None, timeout)
        facts["read_back"] = read_back
        if not read_back:
            detail = (f"accepted the probe but did not send it back on a subscription within {timeout:g} s: "
                      "other members would never see our records")
            return Check("relay", url, "no-read-back", f"{detail}; {describe_limits(relay.info)}",
                         facts={**facts, "finding": detail, "fix": relay_fix(url)})
        assert probe.read_back_at is not None
        rtt = (probe.read_back_at - sent) * 1000
        facts["rtt_ms"] = round(rtt, 1)
        if relay.status().last_notice:
            facts["notice"] = relay.status().last_notice
    finally:
        await relay.close()
    done = f"probe published and read back in {rtt:.0f} ms (connected in {connect_ms:.0f} ms)"
    too_small = [reason for reason in refusals if reason.startswith("a call's messages")]
    if too_small:
        return Check("relay", url, "too-small", f"{done}, but {too_small[0]}; {describe_limits(relay.info)}", rtt,
                     {**facts, "finding": too_small[0], "fix": relay_fix(url)})
    restricted = " (NIP-11 says restricted_writes, yet it took our probe)" if relay.info and \
        relay.info.restricted_writes else ""
    return Check("relay", url, None, f"{done}{restricted}; {describe_limits(relay.info)}", rtt, {**facts, "fix": None})
