"""Issue 10's figures: mesh vs SFU (Janus) for real bot processes, in tests/support/sfu_lab.py's namespaces.

    python tests/bench/sfu_bench.py [--runs 1] [--sizes 4 8 12] [--write docs/benchmarks.md]
    python tests/bench/run.py --only sfu --write docs/benchmarks.md

Root only (network namespaces, Debian's Janus). Every bot runs in the lab's client namespace; Janus in the
server namespace across one veth pair. Method:

- **uplink per peer**: bytes sent inside the client namespace (``lo``: bot↔bot media and data channels, the
  portal's answers — small) plus bytes sent across the veth to Janus, over a steady window, divided by N and
  the window. Same count for both modes, wire bytes (IP headers included). Down per peer (SFU) likewise from
  the veth's received bytes.
- **CPU per peer**: utime + stime of each bot process (/proc/PID/stat) over the window, median over bots, in %
  of one core; Janus' own CPU (its PID's /proc stat) is given beside it.
- **mesh vs SFU**: the same N, one room each, one after the other in the same run (video rooms: the 160x120
  test pattern and a tone; SFU runs name a VideoRoom with ``--sfu-at 2`` so the room is on it from the start).
- **audio room of 12**: audio-only bots on an AudioBridge entry; kbit/s up and down per peer across the veth.
- **switch of a room of 6**: five bots in a mesh (``--sfu-at 6``), the sixth joins: from the first member
  leaving the mesh state to the last one receiving every other's audio and video through the SFU (reports
  polled every 0.2 s); the longest gap of any one peer's tone in any WAV around the switch (100 ms blocks,
  a peer's tone is "there" when its band holds ≥ 2 % of the block's power).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tables import Row, format_table, put_section

from sdparta.media.analysis import tone_power
from support.janus import AudioBridgeSpec, VideoRoomSpec
from support.procs import peers_by_name
from support.sfu_lab import SfuLab, media_from_all, recorded_between, sfu_lab_missing, sfu_of

SECTION = "## SFU"
VIDEO_ROOMS = {4: 6004, 8: 6008, 12: 6012}
SWITCH_ROOM, AUDIO_ROOM = 6106, 6212
WINDOW_S = 10.0
DEADLINE = 120.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _arrived(lab: SfuLab, video: bool, via: str | None) -> bool:
    return all(media_from_all(bot.report() or {}, set(lab.bots) - {name}, video=video, via=via)
               for name, bot in lab.bots.items())


def _on_bridge(lab: SfuLab) -> bool:
    """Every bot on the AudioBridge with its mix arriving (the mix is one stream: per-peer
    ``audio_seconds`` do not count it, ``sfu.mix_seconds`` does) and every peer via the SFU."""
    for name, bot in lab.bots.items():
        report = bot.report() or {}
        sfu, peers = sfu_of(report), peers_by_name(report)
        if sfu.get("state") != "sfu" or (sfu.get("mix_seconds") or 0) < 1:
            return False
        if any(peers.get(other, {}).get("via") != "sfu" for other in set(lab.bots) - {name}):
            return False
    return True


def _wait_until(check: Any, timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def _wait(lab: SfuLab, video: bool, via: str | None, timeout: float = DEADLINE) -> bool:
    return _wait_until(lambda: _arrived(lab, video, via), timeout)


def _janus_cpu(lab: SfuLab) -> float:
    if lab.janus is None:
        return 0.0
    try:
        fields = Path(f"/proc/{lab.janus.pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window(lab: SfuLab, seconds: float = WINDOW_S) -> dict[str, float]:
    """Per-peer uplink / downlink (bytes/s) and CPU (% of a core, median over bots) over a steady window."""
    n = len(lab.bots)
    bytes0, cpu0, janus0, t0 = lab.link_bytes(), lab.cpu_seconds(), _janus_cpu(lab), time.monotonic()
    time.sleep(seconds)
    bytes1, cpu1, janus1, t1 = lab.link_bytes(), lab.cpu_seconds(), _janus_cpu(lab), time.monotonic()
    span = t1 - t0
    return {
        "up": (bytes1["lo"] - bytes0["lo"] + bytes1["tx"] - bytes0["tx"]) / n / span,
        "sfu_up": (bytes1["tx"] - bytes0["tx"]) / n / span,
        "sfu_down": (bytes1["rx"] - bytes0["rx"]) / n / span,
        "cpu": 100 * median([(cpu1[k] - cpu0[k]) / span for k in cpu1 if k in cpu0]),
        "janus_cpu": 100 * (janus1 - janus0) / span,
    }


def _room(lab: SfuLab, n: int, mode: str, run: int) -> dict[str, float] | None:
    names = [f"{mode[0]}{n}-{i}" for i in range(1, n + 1)]
    sfu = {"sfu_room": VIDEO_ROOMS[n], "sfu_at": 2, "plugin": "videoroom"} if mode == "sfu" else {}
    try:
        lab.start_bots(names, f"bench-{mode}-{n}-{run}-{time.time():.0f}", record=False, **sfu)  # type: ignore[arg-type]
        if not _wait(lab, video=True, via=mode):
            print(f"  {mode} {n}: media did not arrive from everyone\n{lab.diagnose()[:4000]}", flush=True)
            return None
        time.sleep(2)  # past the first keyframes and the join's bursts
        return _window(lab)
    finally:
        lab.forget()


def bench_rooms(lab: SfuLab, sizes: list[int], runs: int, rows: list[Row]) -> None:
    for n in sizes:
        results: dict[str, list[dict[str, float]]] = {"mesh": [], "sfu": []}
        for run in range(runs):
            for mode in ("mesh", "sfu"):  # interleaved: machine load hits both alike
                got = _room(lab, n, mode, run)
                if got is not None:
                    results[mode].append(got)
                print(f"  N={n} {mode}: {got}", flush=True)
        rows.extend(room_rows(n, results["mesh"], results["sfu"], runs))


def room_rows(n: int, mesh: list[dict[str, float]], sfu: list[dict[str, float]], runs: int) -> list[Row]:
    """The table rows of one room size (each mode's figures stand on their own when the other failed)."""
    def fig(values: list[dict[str, float]], key: str) -> float:
        return median([v[key] for v in values])

    def kbs(values: list[dict[str, float]], key: str = "up") -> str:
        return f"{fig(values, key) / 1000:.0f} kB/s" if values else "not measured"

    def cpu(values: list[dict[str, float]]) -> str:
        return f"{fig(values, 'cpu'):.0f} % of a core" if values else "not measured"

    missing = [f"{mode}: media did not arrive from everyone ({len(got)}/{runs} runs)"
               for mode, got in (("mesh", mesh), ("SFU", sfu)) if len(got) < runs]
    ratio = f"SFU/mesh {fig(sfu, 'up') / fig(mesh, 'up'):.0%}; " if mesh and sfu else ""
    via = (f"to Janus {kbs(sfu, 'sfu_up')}, from it {kbs(sfu, 'sfu_down')} per peer" if sfu else "")
    janus = f"Janus {fig(sfu, 'janus_cpu'):.0f} % of a core for the room" if sfu else ""
    return [(f"uplink per peer, video room of {n}: mesh vs SFU", f"{kbs(mesh)} vs {kbs(sfu)}",
             "; ".join(x for x in (ratio + via, *missing) if x)),
            (f"CPU per peer, video room of {n}: mesh vs SFU", f"{cpu(mesh)} vs {cpu(sfu)}",
             "; ".join(x for x in (janus, *missing) if x))]


def bench_audio_room(lab: SfuLab, runs: int, rows: list[Row]) -> None:
    results = []
    for run in range(runs):
        names = [f"ab-{i}" for i in range(1, 13)]
        try:
            lab.start_bots(names, f"bench-audio-{run}-{time.time():.0f}", audio_only=True, record=False,
                           sfu_room=AUDIO_ROOM, sfu_at=2, plugin="audiobridge")
            if _wait_until(lambda: _on_bridge(lab)):
                time.sleep(2)
                results.append(_window(lab))
                print(f"  audio 12: {results[-1]}", flush=True)
            else:
                print(f"  audio 12: audio did not arrive from everyone\n{lab.diagnose()[:4000]}", flush=True)
        finally:
            lab.forget()
    if not results:
        rows.append(("audio room of 12 via AudioBridge", "not measured", "audio did not arrive from everyone"))
        return
    up = median([r["sfu_up"] for r in results]) * 8 / 1000
    down = median([r["sfu_down"] for r in results]) * 8 / 1000
    cpu, janus = median([r["cpu"] for r in results]), median([r["janus_cpu"] for r in results])
    rows.append(("audio room of 12 via AudioBridge: per peer up / down", f"{up:.0f} / {down:.0f} kbit/s",
                 f"down/up {down / up:.2f} (target ≤ 2: {'met' if down <= 2 * up else 'MISSED'}); "
                 f"CPU per peer {cpu:.0f} %, Janus {janus:.0f} %"))


def _longest_gap(bot: Any, others: dict[str, float], start: float, end: float) -> float:
    samples, rate, _ = recorded_between(bot, start, end)
    block = rate // 10
    worst = 0.0
    for freq in others.values():
        run = 0
        for at in range(0, len(samples) - block + 1, block):
            if tone_power(samples[at:at + block], rate, freq) < 0.02:
                run += 1
                worst = max(worst, run * 0.1)
            else:
                run = 0
    return worst


def bench_switch(lab: SfuLab, runs: int, rows: list[Row]) -> None:
    times, gaps = [], []
    for run in range(runs):
        names = [f"sw{run}-{i}" for i in range(1, 7)]
        room = f"bench-switch-{run}-{time.time():.0f}"
        common: dict[str, Any] = {"sfu_room": SWITCH_ROOM, "sfu_at": 6, "plugin": "videoroom", "sfu_hold": 60}
        try:
            lab.start_bots(names[:5], room, **common)
            if not _wait(lab, video=True, via="mesh"):
                print(f"  switch: the mesh of five did not carry media\n{lab.diagnose()[:4000]}", flush=True)
                continue
            early = {n: bot for n, bot in lab.bots.items()}
            lab.start_bots(names[5:], room, share=None, **common)
            first = done = None
            marks: dict[tuple[str, str], tuple[float, int]] = {}
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline and done is None:
                now = time.time()
                reports = lab.reports()
                if first is None and any(sfu_of(r).get("state") in ("joining", "sfu") for r in reports.values()):
                    first = now
                complete = True
                for name, report in reports.items():
                    peers = peers_by_name(report)
                    for other in set(names) - {name}:
                        peer = peers.get(other, {})
                        key = (name, other)
                        if peer.get("via") != "sfu":
                            complete = False
                            continue
                        got = (peer.get("audio_seconds", 0.0), peer.get("video_frames", 0))
                        marks.setdefault(key, got)
                        if got[0] < marks[key][0] + 0.5 or got[1] < marks[key][1] + 3:
                            complete = False
                if complete and first is not None:
                    done = now
                time.sleep(0.2)
            if first is None or done is None:
                print(f"  switch: not complete\n{lab.diagnose()[:4000]}", flush=True)
                continue
            times.append(done - first)
            time.sleep(2)
            lab.stop_all()
            tones = lab.tones()
            gaps.append(max(_longest_gap(bot, {o: tones[o] for o in early if o != n}, first - 2, done + 2)
                            for n, bot in early.items()))
            print(f"  switch: {times[-1]:.1f} s, longest gap {gaps[-1]:.1f} s", flush=True)
        finally:
            lab.forget()
    if not times:
        rows.append(("room of 6 moving onto the SFU", "not measured", "the switch did not complete"))
        return
    rows.append(("room of 6 moving onto the SFU: first member switching → last receiving all streams",
                 f"{median(times):.1f} s", f"median of {len(times)} runs"))
    worst = max(gaps)
    rows.append(("longest gap of one peer's tone in any WAV during the switch", f"{median(gaps):.1f} s",
                 f"worst {worst:.1f} s over {len(gaps)} runs; target ≤ 1 s: {'met' if worst <= 1 else 'MISSED'}"))


#: How to read the section (written with every run, beside the figures it explains).
READING = ("one run of each room (two of the switch); uplink per peer is everything a peer sends: through the "
           "SFU that is its media to Janus plus the room's signalling and the mesh's data channels, which "
           "stay up for chat; CPU per peer is capped by the machine in the rooms of 12 (12 bots on 2 cores: "
           "at most 17 % each), so there it says saturated, not cheap")


def bench_sfu(runs: int, rows: list[Row], *, sizes: tuple[int, ...] = (4, 8, 12),
              notes: list[str] | None = None) -> None:
    """The `sfu` entry of tests/bench/run.py (one run of each room by default: the whole bench < 10 min)."""
    missing = sfu_lab_missing()
    if missing is not None:
        rows.append(("SFU figures", "not measured", missing))
        return
    del runs  # one run of each room and two switches fit the 10 minutes on two cores
    workdir = Path(tempfile.mkdtemp(prefix="sdparta-sfu-bench-"))
    lab = SfuLab(workdir, videorooms=[*(VideoRoomSpec(r, publishers=16) for r in VIDEO_ROOMS.values()),
                                      VideoRoomSpec(SWITCH_ROOM)],
                 audiobridges=[AudioBridgeSpec(AUDIO_ROOM)]).start()
    started = time.monotonic()
    try:
        bench_rooms(lab, list(sizes), 1, rows)
        bench_audio_room(lab, 1, rows)
        bench_switch(lab, 2, rows)
    finally:
        lab.close()
    if notes is not None:
        notes.append(f"measured in {time.monotonic() - started:.0f} s; Janus 1.1.2 (Debian), aiortc bots, "
                     f"{WINDOW_S:.0f} s steady windows; method in tests/bench/sfu_bench.py")
        notes.append(READING)


def write_section(path: Path, rows: list[Row], notes: list[str]) -> None:
    """Put "## SFU (DATE)" into ``path`` (each row stands on its own: a failed mode keeps the others)."""
    put_section(path, SECTION, "`tests/bench/run.py --only sfu` on this machine ({cores} cores), {date}: real "
                "`sdparta bot` processes and Debian's Janus in network namespaces (tests/support/sfu_lab.py); the "
                "method is in `tests/bench/sfu_bench.py`.", rows, notes, whole=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4, 8, 12], choices=sorted(VIDEO_ROOMS))
    parser.add_argument("--only", choices=("rooms", "audio", "switch"), default=None)
    parser.add_argument("--write", default=None, help="put the section into this markdown file")
    args = parser.parse_args()
    rows: list[Row] = []
    notes: list[str] = []
    if args.only is None:
        bench_sfu(args.runs, rows, sizes=tuple(args.sizes), notes=notes)
    else:
        lab = SfuLab(Path(tempfile.mkdtemp(prefix="sdparta-sfu-bench-")),
                     videorooms=[*(VideoRoomSpec(r, publishers=16) for r in VIDEO_ROOMS.values()),
                                 VideoRoomSpec(SWITCH_ROOM)], audiobridges=[AudioBridgeSpec(AUDIO_ROOM)]).start()
        try:
            {"rooms": lambda: bench_rooms(lab, args.sizes, args.runs, rows),
             "audio": lambda: bench_audio_room(lab, args.runs, rows),
             "switch": lambda: bench_switch(lab, args.runs, rows)}[args.only]()
        finally:
            lab.close()
    print(format_table(rows))
    if args.write:
        write_section(Path(args.write), rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
