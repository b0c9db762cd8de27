"""Everything configurable about a portal, each default written once (here).

Import-light (nothing from the store, no aiohttp): ``sdparta.portal``'s CLI flags read their
defaults from these fields.
docs/portal.md explains each limit and why its default is what it is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: File descriptors kept free for SQLite, worker threads and logs when the connection cap is derived
#: from the process's descriptor limit.
FD_HEADROOM = 64


@dataclass(frozen=True)
class BlobPolicy:
    """How the skyfile quota is shared (all sizes in bytes of content + ``db.BLOB_OVERHEAD`` per blob);
    made from PortalOptions (``blob_policy``), which holds the defaults.

    - ``quota_bytes``: everything stored.
    - ``client_bytes``: one client's share. A client over it first loses its *own* oldest blobs that
      are older than ``evict_min_age_s`` (a room's superseded presence lists and messages), else 507.
    - ``small_blob_bytes`` / ``small_reserve_bytes``: blobs above ``small_blob_bytes`` may not use the
      last ``small_reserve_bytes`` of the quota, which stays for room-sized writes.
    - When the quota is full, a blob may displace blobs older than ``evict_min_age_s`` of clients that
      hold more than the uploader would (fair share: the heaviest users give way first), then the
      uploader's own.
    """

    quota_bytes: int
    client_bytes: int
    small_blob_bytes: int
    small_reserve_bytes: int
    evict_min_age_s: float


@dataclass
class PortalOptions:
    """Everything configurable about a portal; docs/portal.md explains each limit and its default.

    The per-client defaults are sized for a room of 64 on one host (every test runs ~10 bots and
    benches thousands of requests per second, all from 127.0.0.1), not for one person.
    """

    #: the registry subscription websocket (push); off = only the plain API, clients poll
    subscription: bool = True
    #: the largest skyfile; the same 4 MiB as the client's ``store.base.DEFAULT_MAX_BLOB`` (what a
    #: download reads at most), checked by a test: not imported, because importing the store
    #: package loads httpx and aiohttp, and the CLI reads these defaults at every start
    max_blob_bytes: int = 4 * 1024 * 1024
    #: skyfile storage in all, and how long a skyfile is kept
    quota_bytes: int = 1024 * 1024 * 1024
    blob_ttl_s: float = 24 * 3600
    #: push sockets on the whole portal (503 past it)
    max_sockets: int = 2048
    #: slots one push socket may watch: a room member needs about 1 + N (presence, settings, one per
    #: member pair); rooms have at most 64 members
    max_subscriptions_per_socket: int = 256
    #: push sockets one client may hold (a member needs one per portal)
    max_sockets_per_client: int = 128
    #: open TCP connections in all; 0 = the descriptor limit minus FD_HEADROOM
    max_connections: int = 0
    max_connections_per_client: int = 256
    #: a request head must be complete this long after connecting or after the previous response;
    #: an idle keep-alive connection is closed after the same time
    header_timeout_s: float = 30.0
    #: a request body must be complete this long after its head
    body_timeout_s: float = 60.0
    #: parts in one skyfile upload (skynet-js sends one, named ``file``)
    max_multipart_parts: int = 8
    #: addresses of reverse proxies in front of the portal: for requests from them the client is the
    #: address the proxy appended to ``X-Forwarded-For``, and their TCP connections are not capped
    trusted_proxies: tuple[str, ...] = ()
    #: skyfile upload bytes per second per client, and the burst (each upload counts at least 4 KiB)
    upload_rate_bytes_s: float = 2 * 1024 * 1024
    upload_burst_bytes: float = 32 * 1024 * 1024
    #: one client's share of the skyfile quota (capped at the quota)
    client_quota_bytes: int = 64 * 1024 * 1024
    #: skyfiles up to this size are "room-sized" and may use the reserve
    small_blob_bytes: int = 128 * 1024
    #: the end of the quota only room-sized skyfiles may use (capped at an eighth of the quota)
    small_reserve_bytes: int = 128 * 1024 * 1024
    #: a skyfile this young is never evicted to make room (its readers may not have fetched it yet)
    evict_min_age_s: float = 600.0
    #: new registry slots per second per client, and the burst; updates of existing slots are free
    registry_insert_rate: float = 2.0
    registry_insert_burst: float = 1000.0
    #: registry entries not written for this long expire (as on Skynet)
    registry_ttl_s: float = 30 * 24 * 3600
    #: the directory served at ``/web/`` (None: the package's ``sdparta/web``)
    web_dir: str | None = None

    def check(self) -> None:
        """ValueError naming the bad option."""
        if self.max_blob_bytes <= 0:
            raise ValueError("the maximum skyfile size must be positive")
        if self.quota_bytes <= 0:
            raise ValueError("the skyfile quota must be positive")
        if self.blob_ttl_s <= 0:
            raise ValueError("the skyfile lifetime must be positive")
        positive = ("max_sockets", "max_subscriptions_per_socket", "max_sockets_per_client",
                    "max_connections_per_client", "header_timeout_s", "body_timeout_s", "max_multipart_parts",
                    "upload_rate_bytes_s", "client_quota_bytes", "registry_insert_rate", "registry_ttl_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        if self.max_connections < 0 or self.small_blob_bytes < 0 or self.small_reserve_bytes < 0 \
                or self.evict_min_age_s < 0:
            raise ValueError("connection, reserve and eviction limits must not be negative")
        if self.upload_burst_bytes < self.max_blob_bytes:
            raise ValueError("the upload burst must allow one skyfile of the maximum size")
        if self.registry_insert_burst < 1:
            raise ValueError("the registry insert burst must be at least 1")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_address(proxy)
            except ValueError:
                raise ValueError(f"trusted proxy {proxy!r} is not an IP address (e.g. 127.0.0.1)") from None

    def blob_policy(self) -> BlobPolicy:
        return BlobPolicy(quota_bytes=self.quota_bytes, client_bytes=min(self.client_quota_bytes, self.quota_bytes),
                          small_blob_bytes=self.small_blob_bytes,
                          small_reserve_bytes=min(self.small_reserve_bytes, self.quota_bytes // 8),
                          evict_min_age_s=self.evict_min_age_s)

    def connection_cap(self) -> int:
        """``max_connections``, or what the process's descriptor limit allows."""
        if self.max_connections:
            return self.max_connections
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            return 4096
        if soft == resource.RLIM_INFINITY:
            return 65536
        return max(16, soft - FD_HEADROOM)


