"""Portal: latency, Skynet API compatibility and push (subscription)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import httpx

from sdparta.netchecks.check import Check
from sdparta.store.base import StoreError, StoreUnavailable
from sdparta.store.portal_client import PortalClient, check_portal_url


async def check_portal(url: str, *, timeout: float = 5.0) -> Check:
    """Latency (median of 3 HEAD /), Skynet API compatibility (a registry read of an empty slot must
    say 404) and whether it pushes registry updates (subscription websocket)."""
    try:
        url = check_portal_url(url)
    except ValueError as exc:
        return Check("portal", url, "bad-url", str(exc))
    client = PortalClient(url, timeout=timeout)
    try:
        latencies = []
        header = None
        for _ in range(3):
            started = time.monotonic()
            # one overall deadline per request: a portal that drips bytes never trips the per-read timeout
            response = await asyncio.wait_for(client.http.head(url + "/"), 2 * timeout)
            latencies.append((time.monotonic() - started) * 1000)
            header = response.headers.get("skynet-portal-api")
        latency = statistics.median(latencies)
        try:
            await client.get_entry(os.urandom(32), os.urandom(32))
        except StoreUnavailable as exc:
            return Check("portal", url, "unreachable", str(exc), latency)
        except StoreError as exc:
            return Check("portal", url, "not-a-portal", f"answers HTTP but not the Skynet registry API ({exc})",
                         latency)
        subscription = await client.open_subscription()
        push = subscription is not None
        if subscription is not None:
            await subscription.aclose()
    except (TimeoutError, httpx.ReadTimeout):
        return Check("portal", url, "unreachable", "not answering (it accepts connections but sends no complete "
                     f"answer within {2 * timeout:g} s): check that it is a portal and that it is not overloaded")
    except httpx.HTTPError as exc:
        return Check("portal", url, "unreachable", f"unreachable ({type(exc).__name__}: {exc}): check the URL "
                     "and that it is running (start one with `sdparta portal`)")
    finally:
        await client.aclose()
    facts = {"push": push, "skynet_portal_api_header": header is not None}
    how = "pushes updates (subscription)" if push else "no subscription: clients will poll (slower, more requests)"
    return Check("portal", url, None, f"Skynet API ok in {latency:.0f} ms; {how}", latency, facts)
