"""`just bench`: the figures issues 2, 3 and 4 name, as medians of several runs with in-run baselines.

Usage: python tests/bench/run.py [--runs 5] [--write docs/benchmarks.md] [--only NAME ...]
Everything runs on 127.0.0.1 (a real portal process, real aiortc peers, real bot processes), except
the `lab` figures: real bots behind real NATs in network namespaces (root only; skipped with the reason),
and the `relay` figures (issue 12: sdparta and Trystero over a local Nostr relay, in a loopback-only
namespace; root, Chromium and playwright, see relay_bench.py) and the `web` figures (issue 13: the
browser page joining a waiting bot beside a bot joining it, page weight, time to interactive on the
Pixel 7 profile; network namespaces, root, Chromium and playwright, see web_bench.py), which `--write`
puts into sections of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tables import Row, format_table
from portal_bench import portal_rates
from relay_bench import bench_relay, write_section
from resilience_bench import bench_recovery
from web_bench import bench_web
from web_bench import write_section as write_web_section

from support.procs import peers_by_name, start_bot, start_portal, wait_for


def mesh_connected(bots: list[Any], n: int) -> bool:
    """Every bot reports at least ``n - 1`` connected peers."""
    return all(sum(p["status"] == "connected" for p in peers_by_name(b.report()).values()) >= n - 1 for b in bots)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------- floor
async def _direct_pair_once() -> float:
    from aiortc import RTCConfiguration, RTCPeerConnection

    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    start = time.perf_counter()
    try:
        a.createDataChannel("x")
        a.addTransceiver("audio")
        a.addTransceiver("video")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        while not (a.connectionState == "connected" and b.connectionState == "connected"):
            await asyncio.sleep(0.002)
        return time.perf_counter() - start
    finally:
        await a.close()
        await b.close()


def bench_floor(runs: int) -> float:
    return median([asyncio.run(_direct_pair_once()) for _ in range(runs)])


# ----------------------------------------------------------------------------- time to connected
def _time_to_connected(portal_url: str, peers: int, push: bool, room: str) -> float:
    """In-process Calls with pre-derived keys; time from the last peer's start to all connected."""
    from sdparta.engine.call import Call, CallConfig
    from sdparta.room.keys import RoomKeys

    keys = RoomKeys.derive(room, "")

    def make(i: int) -> Call:
        return Call(CallConfig(room=room, portals=[portal_url], name=f"p{i}", video="pattern",
                               audio="tone:440", push=push, room_keys=keys))

    calls = [make(i) for i in range(peers)]
    try:
        for call in calls[:-1]:
            call.start()

        def all_connected(group: list[Call], n: int) -> bool:
            return all(sum(p.status == "connected" for p in c.snapshot().peers) >= n - 1 for c in group)

        if peers > 2:
            wait_for(lambda: all_connected(calls[:-1], peers - 1), 60, "waiting peers connected", interval=0.01)
        else:
            wait_for(lambda: all(c.snapshot().status == "joined" for c in calls[:-1]), 30, "joined",
                     interval=0.01)
        start = time.perf_counter()
        calls[-1].start()
        wait_for(lambda: all_connected(calls, peers), 60, "all pairs connected", interval=0.002)
        return time.perf_counter() - start
    finally:
        for call in calls:
            call.stop()


def bench_connect(runs: int, rows: list[Row]) -> None:
    floor = bench_floor(runs)
    rows.append(("aiortc pair, SDP handed over in-process (floor)", f"{floor * 1000:.0f} ms", "baseline"))
    with tempfile.TemporaryDirectory() as tmp:
        for push in (True, False):
            portal = start_portal(Path(tmp) / f"p{push}.sqlite3", subscription=push)
            try:
                for peers in (2, 4):
                    times = [_time_to_connected(portal.url, peers, push, f"bench-{push}-{peers}-{i}")
                             for i in range(runs)]
                    m = median(times)
                    label = f"{peers} peers, {'push' if push else 'polling'}: last join → all connected"
                    verdict = f"{m / floor:.1f}× floor"
                    if push and peers == 2:
                        target = 2 * floor + 0.150
                        verdict += f"; target ≤ {target * 1000:.0f} ms: {'met' if m <= target else 'MISSED'}"
                    rows.append((label, f"{m * 1000:.0f} ms", verdict))
            finally:
                portal.stop()


# ----------------------------------------------------------------------------- bot based figures
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_mesh(rows: list[Row], sizes: tuple[int, ...] = (2, 4, 8), window: float = 10.0) -> None:
    """CPU of one bot in meshes of N bot processes and the fraction of video frames delivered."""
    with tempfile.TemporaryDirectory() as tmp:
        portal = start_portal(Path(tmp) / "mesh.sqlite3")
        try:
            for n in sizes:
                work = Path(tmp) / f"mesh{n}"
                work.mkdir()
                bots = [start_bot(work, f"mesh-{n}", [portal.url], f"m{i}", tone=300 + 50 * i, record=False,
                                  extra=["--connect-timeout", "60"]) for i in range(n)]
                try:
                    connected_all = True
                    try:
                        wait_for(lambda bots=bots, n=n: mesh_connected(bots, n), 90, f"mesh of {n} connected")
                    except AssertionError:
                        connected_all = False  # report what the machine managed instead of nothing
                    time.sleep(2)  # let encoders settle before the measured window
                    before_cpu = _cpu_seconds(bots[0].proc.pid)
                    before = [b.report() or {} for b in bots]
                    t0 = time.monotonic()
                    time.sleep(window)
                    elapsed = time.monotonic() - t0
                    cpu = (_cpu_seconds(bots[0].proc.pid) - before_cpu) / elapsed
                    after = [b.report() or {} for b in bots]
                    fractions = []
                    for prev, now in zip(before, after, strict=True):
                        # Reports are rewritten about once a second: count frames over the span between
                        # the two reports' own write times, not over our sleep (±1 s of 10 s otherwise).
                        span = now.get("written_at", 0) - prev.get("written_at", 0)
                        prev_frames = {k: p["video_frames"] for k, p in peers_by_name(prev).items()}
                        for name, peer in peers_by_name(now).items():
                            fractions.append((peer["video_frames"] - prev_frames.get(name, 0)) / (15 * span)
                                             if span > 0 else 0.0)
                    pairs = sum(sum(p["status"] == "connected" for p in peers_by_name(report).values())
                                for report in after)
                    worst = min(fractions) if fractions else 0.0
                    verdict = "met" if connected_all and worst >= 0.95 else "MISSED"
                    rows.append((f"mesh of {n} bots (audio + 160×120 video at 15 fps)",
                                 f"{cpu * 100:.0f}% CPU of one peer",
                                 f"{pairs}/{n * (n - 1)} directed pairs connected; worst stream "
                                 f"{worst * 100:.0f}% / median {median(fractions) * 100:.0f}% of frames"
                                 + (f" (target ≥ 95%: {verdict})" if n == 8 else "")))
                finally:
                    for b in bots:
                        b.stop()
        finally:
            portal.stop()


def bench_requests(rows: list[Row], window: float = 20.0) -> None:
    """Portal requests per second per peer in a steady room of 4, push and polling."""
    with tempfile.TemporaryDirectory() as tmp:
        for push in (True, False):
            portal = start_portal(Path(tmp) / f"r{push}.sqlite3", subscription=push)
            work = Path(tmp) / f"req{push}"
            work.mkdir()
            bots = [start_bot(work, "steady", [portal.url], f"s{i}", tone=None, video="none", record=False)
                    for i in range(4)]
            try:
                wait_for(lambda bots=bots: mesh_connected(bots, 4), 60, "steady room connected")
                time.sleep(3)

                def total(b: Any) -> int:
                    return sum((b.report() or {}).get("requests", {}).get(k, 0)
                               for k in ("get", "set", "upload", "download"))

                before = [total(b) for b in bots]
                time.sleep(window)
                after = [total(b) for b in bots]
                per_peer = [(a - b) / window for a, b in zip(after, before, strict=True)]
                m = median(per_peer)
                rows.append((f"steady room of 4, {'push' if push else 'polling'}: portal requests",
                             f"{m:.2f} req/s per peer", f"{m / 3:.2f} per remote (target ≤ 1)"))
            finally:
                for b in bots:
                    b.stop()
                portal.stop()


def bench_opus(rows: list[Row], window: float = 8.0) -> None:
    """RTP payload bit rate of an audio-only peer at several Opus settings (from getStats)."""
    with tempfile.TemporaryDirectory() as tmp:
        portal = start_portal(Path(tmp) / "opus.sqlite3")
        try:
            for bitrate in (16000, 32000, 96000):
                work = Path(tmp) / f"o{bitrate}"
                work.mkdir()
                bots = [start_bot(work, f"opus-{bitrate}", [portal.url], f"o{i}", tone=440 + 200 * i,
                                  record=False, extra=["--audio-only", "--opus-bitrate", str(bitrate)])
                        for i in range(2)]
                try:
                    wait_for(lambda bots=bots: mesh_connected(bots, 2), 60, "opus pair connected")
                    time.sleep(2)
                    sent0 = next(iter(peers_by_name(bots[0].report()).values()))["bytes_sent"]
                    time.sleep(window)
                    sent1 = next(iter(peers_by_name(bots[0].report()).values()))["bytes_sent"]
                    kbps = (sent1 - sent0) * 8 / window / 1000
                    note = "target ≤ 24 kbit/s" if bitrate == 16000 else "aiortc default: 96 kbit/s stereo"
                    rows.append((f"audio-only, Opus {bitrate // 1000} kbit/s mono", f"{kbps:.1f} kbit/s per remote",
                                 note))
                finally:
                    for b in bots:
                        b.stop()
        finally:
            portal.stop()


def _camera_like_frames(count: int) -> list[Any]:
    """Moving test-pattern frames with sensor-like noise, as a camera would deliver (RGB 160×120)."""
    import numpy as np

    from support.frozen_call import pattern_frame

    rng = np.random.default_rng(7)
    base = pattern_frame(0).astype(np.int16)
    frames = []
    for i in range(count):
        moved = np.roll(base, i * 2, axis=1) + rng.integers(-6, 7, base.shape)
        frames.append(np.clip(moved, 0, 255).astype(np.uint8))
    return frames


def bench_render(rows: list[Row], count: int = 150) -> None:
    """Renderer + strip building per 80×24 frame vs rich-pixels Pixels.from_image, and bytes per frame."""
    from PIL import Image
    from rich.console import Console
    from rich_pixels import Pixels

    from sdparta.media.render import ansi_bytes, changed_rows, render_halfblock
    from sdparta.ui.video import StripPainter

    frames = _camera_like_frames(count)
    console = Console(width=80, file=open(os.devnull, "w"), color_system="truecolor")  # noqa: SIM115
    baseline = []
    for frame in frames[:40]:
        t0 = time.perf_counter()
        pixels = Pixels.from_image(Image.fromarray(frame).resize((80, 48)))
        list(console.render(pixels))
        baseline.append(time.perf_counter() - t0)
    base_ms = median(baseline) * 1000
    rows.append(("rich-pixels Pixels.from_image, 80×24 cells (baseline)", f"{base_ms:.2f} ms/frame", "baseline"))
    truecolor_bytes = 0.0
    for mode in ("truecolor", "256", "mono"):
        costs, sizes, prev, painter = [], [], None, StripPainter()  # a tile's painter, caches per tile
        for frame in frames:
            t0 = time.perf_counter()
            cells = render_halfblock(frame, 80, 24, mode)
            changed = changed_rows(prev, cells)
            for y in changed:
                painter.row_strip(cells, y)
            costs.append(time.perf_counter() - t0)
            sizes.append(ansi_bytes(cells, changed))
            prev = cells
        ms, size = median(costs) * 1000, median(sizes)
        if mode == "truecolor":
            truecolor_bytes = size
        ratio = size / truecolor_bytes if truecolor_bytes else 1.0
        target = {"truecolor": "", "256": " (target ≤ 60%)", "mono": " (target ≤ 5%)"}[mode]
        rows.append((f"render {mode}, 80×24 tile", f"{ms:.2f} ms/frame, {size / 1024:.1f} KiB/frame",
                     f"{base_ms / ms:.0f}× faster than baseline (target ≥ 10×); {ratio * 100:.0f}% of "
                     f"truecolor bytes{target}"))


def bench_app_cpu(rows: list[Row], window: float = 10.0) -> None:
    """CPU of the app process (UI + engine) showing 4 remote video tiles at 15 fps, headless."""
    from sdparta.engine.call import Call, CallConfig
    from sdparta.ui.app import SdpartaApp

    with tempfile.TemporaryDirectory() as tmp:
        portal = start_portal(Path(tmp) / "app.sqlite3")
        bots = [start_bot(Path(tmp), "app-cpu", [portal.url], f"v{i}", tone=300 + 100 * i, record=False)
                for i in range(4)]
        result: dict[str, float] = {}

        async def drive() -> None:
            call = Call(CallConfig(room="app-cpu", portals=[portal.url], name="viewer", video="none", audio="none"))
            app = SdpartaApp(call, video_mode="truecolor", fps=15)
            app.governor.min_fps = 15  # measure at the figure's 15 fps: no adaptive lowering
            async with app.run_test(size=(160, 50)) as pilot:
                deadline = time.monotonic() + 90
                while sum(p.status == "connected" and p.video_frames > 0 for p in app.snapshot_state.peers) < 4:
                    assert time.monotonic() < deadline, "4 video peers never connected"
                    await pilot.pause(0.2)
                await pilot.pause(2)
                cpu0, t0 = time.process_time(), time.monotonic()
                refreshed0 = sum(t.video.rows_refreshed for t in app._tiles.values())
                await pilot.pause(window)
                result["cpu"] = (time.process_time() - cpu0) / (time.monotonic() - t0)
                result["rows"] = (sum(t.video.rows_refreshed for t in app._tiles.values()) - refreshed0) / window
                result["fps"] = app.fps
                await pilot.press("ctrl+q")
            call.stop()

        try:
            asyncio.run(drive())
        finally:
            for b in bots:
                b.stop()
            portal.stop()
        rows.append(("app with 4 remote video tiles at 15 fps (headless, UI + engine)",
                     f"{result['cpu'] * 100:.0f}% of one core",
                     f"target < 50%; {result['rows']:.0f} rows redrawn/s; tile fps {result['fps']:.0f}"))


# ----------------------------------------------------------------------------- NAT lab
def _state_wall_time(bot: Any, peer_name: str, state: str, after: float) -> float | None:
    """Unix time of the first ``state`` of the pair with ``peer_name`` at or after ``after``."""
    report = bot.report() or {}
    peer = peers_by_name(report).get(peer_name, {})
    for change in peer.get("states", []):
        wall = report.get("started_at", 0.0) + change["t"]
        if change["kind"] == "peer" and change["state"].split(":")[0] == state and wall >= after - 0.05:
            return float(wall)
    return None


def bench_lab(runs: int, rows: list[Row]) -> None:
    """Time to connected by path (direct / STUN / TURN), time to notice a dead pair and time to recover
    after a 10 s uplink outage, with real bots behind real NAT boxes (tests/netlab)."""
    from netlab.lab import build_lab, netlab_unavailable

    if (reason := netlab_unavailable()) is not None:
        rows.append(("NAT lab figures", "not measured", reason))
        return
    with tempfile.TemporaryDirectory() as tmp:
        lab = build_lab(Path(tmp))
        try:
            portal, coturn = lab.start_portal(Path(tmp)), lab.start_coturn(Path(tmp))
            public = ["ip", "netns", "exec", lab.public_ns]
            eim = [lab.add_private(f"e{i}", "eim").exec_prefix() for i in (1, 2)]
            sym = [lab.add_private(f"s{i}", "symmetric").exec_prefix() for i in (1, 2)]
            stun = ["--stun", coturn.stun_url()]
            turn = [*stun, "--turn", coturn.url(), "--turn-user", coturn.user, "--turn-password", coturn.password]
            paths = {"direct": ((public, public), []), "stun": ((eim[0], eim[1]), stun),
                     "turn": ((sym[0], sym[1]), turn)}
            for path, (prefixes, flags) in paths.items():
                times: list[float] = []
                seen: set[str] = set()
                for run in range(runs):
                    work = Path(tmp) / f"{path}{run}"
                    work.mkdir()
                    bots = [start_bot(work, f"lab-{path}-{run}", [portal], name, tone=440, video="none",
                                      record=False, extra=["--connect-timeout", "30", *flags], argv_prefix=prefix)
                            for name, prefix in zip(("a", "b"), prefixes, strict=True)]
                    try:
                        wait_for(lambda bots=bots: mesh_connected(bots, 2), 60, f"{path} pair connected")
                        for bot, other in zip(bots, ("b", "a"), strict=True):
                            peer = peers_by_name(bot.report())[other]
                            times.append(peer["connected_after_s"])
                            seen.add(str(peer["path"]))
                    finally:
                        for bot in bots:
                            bot.stop()
                rows.append((f"lab: time to connected, {path} path (discovery → connected)",
                             f"{median(times) * 1000:.0f} ms", f"median of {len(times)} (both sides of {runs} "
                             f"pairs); reported path {'/'.join(sorted(seen))}"))
            _bench_outage(lab, Path(tmp), portal, eim, stun, runs, rows)
        finally:
            lab.close()


def _bench_outage(lab: Any, tmp: Path, portal: str, prefixes: list[list[str]], flags: list[str], runs: int,
                  rows: list[Row], outage: float = 10.0) -> None:
    host = next(h for h in lab.hosts.values() if h.exec_prefix() == prefixes[0])
    detect: list[float] = []
    recover: list[float] = []
    for run in range(runs):
        work = tmp / f"outage{run}"
        work.mkdir()
        bots = [start_bot(work, f"lab-outage-{run}", [portal], name, tone=440, video="none", record=False,
                          extra=["--connect-timeout", "30", *flags], argv_prefix=prefix)
                for name, prefix in zip(("a", "b"), prefixes, strict=True)]
        try:
            wait_for(lambda bots=bots: mesh_connected(bots, 2), 60, "pair connected before the outage")
            time.sleep(1)
            down_at = time.time()
            lab.link_down(host)
            wait_for(lambda bots=bots: all(p["status"] == "reconnecting" for b in bots
                                           for p in peers_by_name(b.report()).values()), 15, "dead pair noticed")
            noticed = [_state_wall_time(b, o, "reconnecting", down_at) for b, o in zip(bots, "ba", strict=True)]
            detect += [t - down_at for t in noticed if t is not None]
            time.sleep(max(0.0, down_at + outage - time.time()))
            up_at = time.time()
            lab.link_up(host)
            wait_for(lambda bots=bots: all(p["status"] == "connected" for b in bots
                                           for p in peers_by_name(b.report()).values()), 60, "pair recovered")
            back = [_state_wall_time(b, o, "connected", up_at) for b, o in zip(bots, "ba", strict=True)]
            recover += [t - up_at for t in back if t is not None]
        finally:
            for bot in bots:
                bot.stop()
    rows.append(("lab: time to notice a dead pair (uplink cut)", f"{median(detect):.1f} s",
                 f"median of {len(detect)} sides; silence threshold 4 s + 1 s heartbeat"))
    worst = max(recover) if recover else float("nan")
    rows.append((f"lab: recovery after a {outage:.0f} s uplink outage (link up → connected)",
                 f"{median(recover):.1f} s", f"median of {len(recover)} sides, worst {worst:.1f} s; "
                 f"target ≤ 5 s: {'met' if recover and worst <= 5 else 'MISSED'}"))


#: `sdparta portal` flags that lift every per-client limit (the in-run baseline of the portal figures).
LIMITS_LIFTED = ["--max-connections-per-client", "100000", "--upload-rate-kb", "10000000", "--upload-burst-mb",
                 "100000", "--client-quota-mb", "100000", "--registry-inserts-per-s", "1000000",
                 "--registry-insert-burst", "1000000"]


def bench_portal(runs: int, rows: list[Row]) -> None:
    """Sustained registry GET and POST rate on loopback, with the default limits and with them lifted
    (rounds interleaved so machine load hits both alike)."""
    limited: list[dict[str, Any]] = []
    lifted: list[dict[str, Any]] = []
    for _ in range(max(3, runs)):
        lifted.append(portal_rates(seconds=3.0, runs=1, extra=LIMITS_LIFTED))
        limited.append(portal_rates(seconds=3.0, runs=1))
    for kind, label in (("get", "GET"), ("post", "POST (signed update)")):
        rate, base = median([r[f"{kind}_rate"] for r in limited]), median([r[f"{kind}_rate"] for r in lifted])
        p99, base_p99 = median([r[f"{kind}_p99_ms"] for r in limited]), median([r[f"{kind}_p99_ms"] for r in lifted])
        rows.append((f"portal registry {label}, 16 connections on loopback",
                     f"{rate:,.0f}/s, p50 {median([r[f'{kind}_p50_ms'] for r in limited]):.1f} ms, p99 {p99:.1f} ms",
                     f"limits lifted (same run): {base:,.0f}/s, p99 {base_p99:.1f} ms → {rate / base:.0%}"))


BENCHES: dict[str, Callable[..., None]] = {
    "connect": lambda runs, rows: bench_connect(runs, rows),
    "requests": lambda runs, rows: bench_requests(rows),
    "opus": lambda runs, rows: bench_opus(rows),
    "mesh": lambda runs, rows: bench_mesh(rows),
    "render": lambda runs, rows: bench_render(rows),
    "app": lambda runs, rows: bench_app_cpu(rows),
    "lab": lambda runs, rows: bench_lab(runs, rows),
    "recovery": lambda runs, rows: bench_recovery(rows, runs=min(runs, 3)),
    "portal": lambda runs, rows: bench_portal(runs, rows),
    "relay": lambda runs, rows: bench_relay(runs, rows, notes=SECTION_NOTES["relay"]),
    "web": lambda runs, rows: bench_web(runs, rows, notes=SECTION_NOTES["web"]),
}
#: benches whose rows `--write` puts into a section of their own (replaced in place), not the main table
SECTIONS: dict[str, Callable[[Path, list[Row], list[str]], None]] = {"relay": write_section,
                                                                     "web": write_web_section}
SECTION_NOTES: dict[str, list[str]] = {"relay": [], "web": []}
#: issue 10 (tests/bench/sfu_bench.py): mesh vs SFU on a real Janus, root only, into a section of its own
BENCHES["sfu"], SECTIONS["sfu"], SECTION_NOTES["sfu"] = (
    lambda runs, rows: __import__("sfu_bench").bench_sfu(runs, rows, notes=SECTION_NOTES["sfu"]),
    lambda path, rows, notes: __import__("sfu_bench").write_section(path, rows, notes), [])


NOTES_HEADING = "## Reading the table"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", default=None, help="also write the table to this markdown file")
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(BENCHES))
    args = parser.parse_args()
    rows: list[Row] = []
    section_rows: dict[str, list[Row]] = {}
    for name, fn in BENCHES.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        into = section_rows.setdefault(name, []) if name in SECTIONS else rows
        fn(args.runs, into)
        print(format_table(into[-3:]), flush=True)
    table = format_table(rows)
    print(format_table(rows + [row for own in section_rows.values() for row in own]))
    for name, own in section_rows.items():
        if args.write:
            SECTIONS[name](Path(args.write), own, SECTION_NOTES[name])
    if args.write and rows:
        header = (f"# Benchmarks\n\nLatest `just bench` on this machine ({os.cpu_count()} cores), "
                  f"{time.strftime('%Y-%m-%d')}. Medians of {args.runs} runs where repeated.\n\n")
        target = Path(args.write)
        # keep the hand-written notes below the table (everything from NOTES_HEADING on)
        notes = target.read_text().partition(NOTES_HEADING)[2] if target.exists() else ""
        target.write_text(header + table + "\n" + (f"\n{NOTES_HEADING}{notes}" if notes else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
