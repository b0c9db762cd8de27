"""Who a portal client is, and the token buckets that ration what each one may do.

Limits are per client address, not per connection: a hostile client opens as many connections as it
likes, but it has one address (or, over IPv6, one /64). See docs/portal.md.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Collection, Mapping


@functools.lru_cache(maxsize=4096)
def client_key(host: str | None) -> str:
    """Who a limit applies to: the IPv4 address, or the IPv6 /64 (one subscriber's whole prefix;
    an IPv4-mapped address counts as its IPv4)."""
    if not host:
        return "local"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address) + "/64"
    return str(ip)


def request_client(remote: str | None, headers: Mapping[str, str], trusted_proxies: Collection[str]) -> str:
    """The client a request counts against. From a trusted reverse proxy it is the right-most
    ``X-Forwarded-For`` address that is not itself a trusted proxy (the one the proxy appended: the
    left part is whatever the client claimed); from anyone else the header is ignored."""
    if remote is None or client_key(remote) not in trusted_proxies:
        return client_key(remote)
    hops = [hop.strip() for hop in headers.get("X-Forwarded-For", "").split(",")[-8:]]
    for hop in reversed(hops):
        if hop and client_key(hop) not in trusted_proxies:
            return client_key(hop)
    return client_key(remote)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``: bursts pass, sustained floods are refused."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens were taken, else the seconds until they would be available."""
        self._refill(time.monotonic())
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else float("inf")

    def charge(self, cost: float = 1.0) -> None:
        """Take ``cost`` even into debt (for work already done by racing requests)."""
        self._refill(time.monotonic())
        self.tokens -= cost

    def peek(self, cost: float = 1.0) -> bool:
        self._refill(time.monotonic())
        return self.tokens >= cost

    @property
    def full(self) -> bool:
        self._refill(time.monotonic())
        return self.tokens >= self.burst


class RateLimiter:
    """One TokenBucket per client; buckets that are full and unused for ``IDLE_S`` are dropped by
    ``prune`` (a spray of addresses costs memory only while it lasts; a bucket a request is using
    is never dropped under it)."""

    IDLE_S = 300.0

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}
        self._seen: dict[str, float] = {}

    def bucket(self, client: str) -> TokenBucket:
        bucket = self.buckets.get(client)
        if bucket is None:
            bucket = self.buckets[client] = TokenBucket(self.rate, self.burst)
        self._seen[client] = time.monotonic()
        return bucket

    def prune(self) -> None:
        idle = time.monotonic() - self.IDLE_S
        for client in [c for c, b in self.buckets.items() if self._seen.get(c, 0.0) < idle and b.full]:
            del self.buckets[client]
            self._seen.pop(client, None)

