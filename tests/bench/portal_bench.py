"""The portal's sustained request rate on loopback: registry GET and POST, with p50/p99 latency.

Usage: python tests/bench/portal_bench.py [--seconds 3] [--runs 3] [--concurrency 16]

A real ``sdparta portal`` subprocess (tests/support/procs.py) and a load generator in this process
that speaks HTTP/1.1 keep-alive over raw asyncio streams (an HTTP client library would cost more CPU
than the portal and measure itself). The POSTs are *updates* of a room-sized set of slots (the
signalling pattern: few slots, rising revisions), pre-signed before the clock starts so the bench
measures the portal, not ed25519. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry
from support.procs import start_portal


def _post_body(keypair: KeyPair, data_key: bytes, revision: int) -> bytes:
    entry = sign_entry(keypair, data_key, b"bench payload %d" % revision, revision)
    return json.dumps({"publickey": {"algorithm": "ed25519", "key": list(entry.public_key)},
                       "datakey": data_key.hex(), "revision": revision, "data": list(entry.data),
                       "signature": list(entry.signature)}).encode()


def _request(method: str, target: str, body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Status code; the body is read (by Content-Length) and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _load(port: int, streams: list[list[bytes]], seconds: float, expect: int) -> dict[str, float]:
    """One keep-alive connection per stream, each sending its requests in order for ``seconds``
    (one slot per connection, so no two in-flight writes race for a slot's revision)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(requests: list[bytes]) -> None:
        nonlocal errors
        own = iter(requests)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < stop_at:
                request = next(own, None)
                if request is None:
                    return
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - now)
                if status != expect:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(requests) for requests in streams))
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {"rate": n / elapsed, "p50_ms": 1000 * latencies[n // 2] if n else float("nan"),
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
            "errors": float(errors), "requests": float(n)}


def portal_rates(seconds: float = 3.0, runs: int = 3, concurrency: int = 16,
                 extra: list[str] | None = None) -> dict[str, Any]:
    """Medians over ``runs`` of sustained GET and POST rate (requests/s) and p50/p99 latency (ms).

    ``extra`` are additional ``sdparta portal`` flags (e.g. to bench with limits changed).
    """
    keys = [KeyPair.from_seed(f"bench-{i}") for i in range(concurrency)]  # one slot per connection
    data_key = hash_data_key("bench-slot")
    per_conn = int(seconds * 10000 / concurrency) + 100  # more pre-signed bodies than the portal takes
    samples: dict[str, list[dict[str, float]]] = {"get": [], "post": []}
    with tempfile.TemporaryDirectory() as tmp:
        portal = start_portal(Path(tmp) / "bench.sqlite3", extra=extra)
        try:
            port = int(portal.url.rsplit(":", 1)[1])
            gets = [_request("GET", f"/skynet/registry?publickey=ed25519:{k.public_key.hex()}"
                                    f"&datakey={data_key.hex()}") for k in keys]
            revision = 0
            for _ in range(runs):
                posts = [[_request("POST", "/skynet/registry", _post_body(k, data_key, revision + r))
                          for r in range(1, per_conn + 1)] for k in keys]
                revision += per_conn
                # the slots exist before the first GET run (GETs of stored entries, 200)
                samples["post"].append(asyncio.run(_load(port, posts, seconds, 204)))
                samples["get"].append(asyncio.run(_load(port, [[g] * per_conn * 2 for g in gets], seconds, 200)))
        finally:
            portal.stop()
    result: dict[str, Any] = {"seconds": seconds, "runs": runs, "concurrency": concurrency}
    for kind, rows in samples.items():
        for metric in ("rate", "p50_ms", "p99_ms"):
            result[f"{kind}_{metric}"] = statistics.median(r[metric] for r in rows)
        result[f"{kind}_errors"] = sum(r["errors"] for r in rows)
        result[f"{kind}_runs"] = [round(r["rate"]) for r in rows]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    r = portal_rates(args.seconds, args.runs, args.concurrency)
    print(f"portal on loopback: {r['runs']} runs × {r['seconds']:g} s, {r['concurrency']} connections (medians)")
    print(f"{'request':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}  runs")
    for kind, label in (("get", "registry GET"), ("post", "registry POST")):
        print(f"{label:<16}{r[kind + '_rate']:>10.0f}{r[kind + '_p50_ms']:>10.2f}{r[kind + '_p99_ms']:>10.2f}"
              f"{r[kind + '_errors']:>8.0f}  {r[kind + '_runs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
