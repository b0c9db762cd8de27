"""A lab for rooms that move onto a Janus SFU: Janus in its own namespace, a portal and N bots on the clients' side.

    server ns (Janus, 10.201.0.2) ── veth ── client ns (10.201.0.1: the portal on its 127.0.0.1, every bot)

Built on :class:`support.janus.JanusNet` (two namespaces, one veth pair) and :func:`support.janus.start_janus`
(Debian's Janus with the lab's own minimal config, unprivileged, by PID). Every bot is a real ``sdparta bot``
process run with ``ip netns exec CLIENT_NS`` (which execs: the PID is the bot's), writing its JSON report and
its WAV into the lab's work dir. Everything is stopped by PID and the namespaces are removed on :meth:`SfuLab.close`.

Media between bots (the mesh) stays inside the client namespace (one address, host candidates); media to and
from the SFU crosses the veth, whose byte counters :meth:`SfuLab.link_bytes` reads (the benchmark's uplink).
Light on two cores: the test pattern is 160x120; audio rooms send no video at all (``--audio-only``).

Waits are on conditions over all reports, with generous deadlines and the reports' state in the failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdparta.media.analysis import read_wav
from support.janus import AudioBridgeSpec, JanusNet, JanusProcess, VideoRoomSpec, janus_missing, start_janus
from support.procs import BotProcess, PortalProcess, peers_by_name, start_bot, start_portal, wait_for

#: distinct pitches, far enough apart for tone_power's ±5 Hz band to tell each one apart in a mix of 12
PITCHES = tuple(float(400 + 130 * i) for i in range(16))

Report = dict[str, Any]


def sfu_lab_missing() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    return janus_missing()


def pitch(index: int) -> float:
    return PITCHES[index % len(PITCHES)]


def sfu_of(report: Report | None) -> dict[str, Any]:
    """The report's ``sfu`` section (``{}`` before the engine writes one)."""
    return (report or {}).get("sfu") or {}


def recorded_between(bot: BotProcess, start: float, end: float) -> tuple[np.ndarray, int, str]:
    """The part of a bot's WAV recorded between two wall-clock times, its rate, and where that part lies
    in the recording (for failure messages). The report's ``audio_started_at`` is the recording's first
    sample; a recording catches up rather than skip, so it keeps wall time."""
    samples, rate = read_wav(bot.wav_path)  # type: ignore[arg-type]
    report = bot.report() or {}
    began = report.get("audio_started_at") or report.get("started_at") or start
    lo, hi = max(0, int((start - began) * rate)), min(len(samples), int((end - began) * rate))
    where = (f"the window is {start - began:.1f}–{end - began:.1f} s of a {len(samples) / rate:.1f} s WAV, "
             f"its last report {report.get('written_at', began) - began:.1f} s")
    return samples[lo:hi], rate, where


def media_from_all(report: Report, others: set[str], *, video: bool, via: str | None = None,
                   frames: int = 5, seconds: float = 1.0) -> bool:
    """``report``'s bot has received audio (and video) from every one of ``others`` (via ``via``). Counters,
    not the pairs' status: on loaded cores a pair shows "reconnecting" for a moment while media flows (and
    through the SFU, media does not depend on the pair at all)."""
    peers = peers_by_name(report)
    for other in others:
        peer = peers.get(other)
        if peer is None or peer.get("audio_seconds", 0) < seconds:
            return False
        if video and peer.get("video_frames", 0) < frames:
            return False
        if via is not None and peer.get("via") != via:
            return False
    return True


def connected_peers(report: Report | None) -> dict[str, dict[str, Any]]:
    return {n: p for n, p in peers_by_name(report).items() if p.get("status") == "connected"}


@dataclass
class SfuLab:
    """Janus + portal + bots. Use :func:`open_lab` (a context manager) or call :meth:`start`/:meth:`close`."""

    workdir: Path
    videorooms: Sequence[VideoRoomSpec] = ()
    audiobridges: Sequence[AudioBridgeSpec] = ()
    session_timeout: int = 30
    with_janus: bool = True
    net: JanusNet = field(default_factory=JanusNet)
    janus: JanusProcess | None = None
    portal: PortalProcess | None = None
    bots: dict[str, BotProcess] = field(default_factory=dict)
    gone: dict[str, BotProcess] = field(default_factory=dict)  # killed or stopped bots, for diagnostics
    _janus_runs: int = 0

    # ------------------------------------------------------------------ life
    def start(self) -> SfuLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.net.create()
        try:
            if self.with_janus:
                self.start_janus()
            self.portal = start_portal(self.workdir / "portal.sqlite3", host="127.0.0.1", argv_prefix=self.prefix)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def prefix(self) -> list[str]:
        """argv prefix running a command in the clients' namespace."""
        return ["ip", "netns", "exec", self.net.client_ns]

    @property
    def janus_url(self) -> str:
        return f"ws://{self.net.server_ip}:8188/"

    def close(self) -> None:
        for bot in [*self.bots.values(), *self.gone.values()]:
            with contextlib.suppress(Exception):
                bot.stop()
        self.gone.update(self.bots)
        self.bots.clear()
        if self.portal is not None:
            with contextlib.suppress(Exception):
                self.portal.stop()
            self.portal = None
        self.stop_janus()
        self.net.close()

    # ------------------------------------------------------------------ Janus
    def start_janus(self) -> JanusProcess:
        """(Re)start Janus on the same address and port, with the same rooms (a fresh process, no sessions)."""
        if self.janus is not None and self.janus.proc.poll() is None:
            raise RuntimeError("janus is already running")
        self._janus_runs += 1
        self.janus = start_janus(self.workdir / f"janus-{self._janus_runs}", netns=self.net.server_ns,
                                 address=self.net.server_ip, session_timeout=self.session_timeout,
                                 rtp_port_range=(20000, 20999), videorooms=self.videorooms,
                                 audiobridges=self.audiobridges)
        return self.janus

    def stop_janus(self) -> None:
        """SIGTERM (a clean shutdown), then its config dir is removed."""
        if self.janus is not None:
            self.janus.stop()

    def kill_janus(self) -> None:
        """SIGKILL: a crash, as far as the clients can tell (no goodbye on any session)."""
        if self.janus is not None:
            self.janus.kill()

    def restart_janus(self) -> JanusProcess:
        self.stop_janus()
        return self.start_janus()

    def janus_log(self, lines: int = 40) -> str:
        return self.janus.log_tail(lines) if self.janus is not None else "(no janus)"

    # ------------------------------------------------------------------ bots
    def start_bots(self, names: Iterable[str], room: str, *, tones: dict[str, float] | None = None,
                   audio_only: bool = False, sfu_room: int | None = None, plugin: str | None = None,
                   pin: str | None = None, sfu_at: int | None = None, sfu_hold: float | None = None,
                   share: str | None = "first", chat: str | None = None, record: bool = True,
                   extra: Sequence[str] = ()) -> list[BotProcess]:
        """Start one bot per name in ``room``: each its own tone (``tones`` or :data:`PITCHES` by join
        order), the 160x120 test pattern (or no video with ``audio_only``), a WAV and a report.

        ``sfu_room``: the room names this lab's Janus (``--share-sfu``) — by the first bot started in this
        call (``share="first"``), by every one (``"all"``) or by none (``None``: an earlier bot did).
        ``plugin``: the entry's plugin (with the sharer's flags); ``sfu_at``/``sfu_hold``: passed to every
        bot. ``chat``: each bot sends ``f"{chat} {name}"`` to every participant once connected."""
        started = []
        for i, name in enumerate(names):
            if name in self.bots:
                raise ValueError(f"a bot named {name} is running already")
            flags: list[str] = ["--connect-timeout", "60"]
            if audio_only:
                flags.append("--audio-only")
            if sfu_room is not None and (share == "all" or (share == "first" and i == 0)):
                flags += ["--share-sfu", self.janus_url, "--sfu-room", str(sfu_room)]
                if pin is not None:
                    flags += ["--sfu-pin", pin]
                if plugin is not None:  # part of the shared entry: only with --share-sfu
                    flags += ["--sfu-plugin", plugin]
            if sfu_at is not None:
                flags += ["--sfu-at", str(sfu_at)]
            if sfu_hold is not None:
                flags += ["--sfu-hold", f"{sfu_hold:g}"]
            tone = (tones or {}).get(name, pitch(len(self.bots) + len(self.gone)))
            bot = start_bot(self.workdir, room, [self.portal_url], name, tone=tone,
                            video="none" if audio_only else "pattern", record=record,
                            chat=f"{chat} {name}" if chat else None, extra=[*flags, *extra],
                            argv_prefix=self.prefix)
            bot.tone = tone  # type: ignore[attr-defined]
            self.bots[name] = bot
            started.append(bot)
        return started

    @property
    def portal_url(self) -> str:
        assert self.portal is not None, "the lab is not started"
        return self.portal.url

    def kill(self, name: str) -> None:
        """SIGKILL one bot (no goodbye)."""
        bot = self.bots.pop(name)
        bot.kill()
        self.gone[name] = bot

    def stop(self, name: str) -> int:
        """SIGTERM one bot (it leaves the room cleanly); its exit code."""
        bot = self.bots.pop(name)
        code = bot.stop()
        self.gone[name] = bot
        return code

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every running bot at once (so their WAVs end together), then wait for each; exit codes."""
        for bot in self.bots.values():
            if bot.proc.poll() is None:
                bot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for bot in self.bots.values():  # a second SIGTERM during the bot's shutdown would kill it outright
            with contextlib.suppress(subprocess.TimeoutExpired):
                bot.proc.wait(max(0.1, deadline - time.monotonic()))
        codes = {}
        for name in list(self.bots):
            codes[name] = self.stop(name)
        return codes

    def forget(self) -> None:
        """Stop every bot and drop the stopped ones (a shared lab between tests)."""
        self.stop_all()
        self.gone.clear()

    def reports(self) -> dict[str, Report | None]:
        return {name: bot.report() for name, bot in self.bots.items()}

    def tones(self) -> dict[str, float]:
        return {name: bot.tone for name, bot in {**self.gone, **self.bots}.items()}  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ waits
    def wait_all(self, check: Callable[[str, Report], bool], what: str, timeout: float = 120.0,
                 names: Iterable[str] | None = None) -> None:
        """Wait until ``check(name, report)`` holds for every running bot (or ``names``)."""
        chosen = list(names) if names is not None else list(self.bots)

        def holds() -> bool:
            for name in chosen:
                report = self.bots[name].report()
                if report is None or not check(name, report):
                    return False
            return True

        wait_for(holds, timeout, what, interval=0.5, diagnostics=self.diagnose)

    def wait_mesh(self, timeout: float = 120.0) -> None:
        """Every running bot connected to every other running bot."""
        def full(name: str, report: Report) -> bool:
            return set(connected_peers(report)) >= set(self.bots) - {name}
        self.wait_all(full, f"all {len(self.bots)} bots connected to each other", timeout)

    def wait_state(self, state: str, timeout: float = 120.0, names: Iterable[str] | None = None) -> None:
        """Every running bot's ``sfu.state`` is ``state``."""
        self.wait_all(lambda _n, r: sfu_of(r).get("state") == state, f"sfu.state == {state!r}", timeout, names)

    # ------------------------------------------------------------------ figures
    def link_bytes(self) -> dict[str, int]:
        """Bytes the clients' side sent to (``tx``) and received from (``rx``) the SFU's side, and bytes
        sent inside the clients' namespace (``lo``: the mesh, the portal)."""
        veth = f"sj{self.net.tag}c"
        out = {}
        for key, dev, stat in (("tx", veth, "tx_bytes"), ("rx", veth, "rx_bytes"), ("lo", "lo", "tx_bytes")):
            result = subprocess.run([*self.prefix, "cat", f"/sys/class/net/{dev}/statistics/{stat}"],
                                    capture_output=True, text=True, timeout=10, check=True)
            out[key] = int(result.stdout.strip())
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """utime + stime of each running bot process, from /proc/PID/stat."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, bot in self.bots.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{bot.proc.pid}/stat").read_text().rpartition(")")[2].split()
                out[name] = (int(fields[11]) + int(fields[12])) / tick  # fields 14, 15 of stat(5)
        return out

    # ------------------------------------------------------------------ diagnostics
    def diagnose(self) -> str:
        lines = []
        for name, bot in [*self.bots.items(), *((f"{n} (gone)", b) for n, b in self.gone.items())]:
            report = bot.report() or {}
            sfu = sfu_of(report)
            peers = {n: (p.get("status"), p.get("via"), f"v={p.get('video_frames')}", f"a={p.get('audio_seconds')}")
                     for n, p in peers_by_name(report).items()}
            events = [e.get("text") for e in sfu.get("events", [])][-4:]
            lines.append(f"{name}: status={report.get('status')} sfu={sfu.get('state')} {sfu.get('named')} "
                         f"events={events} peers={peers}")
            notices = [n.get("text") for n in report.get("notices", [])][-3:]
            if notices:
                lines.append(f"  notices: {notices}")
            with contextlib.suppress(OSError):
                lines.append("  log: " + " | ".join(bot.log_path.read_text(errors="replace").splitlines()[-5:]))
        lines.append("janus log tail:\n" + self.janus_log(20))
        return "\n".join(lines)


@contextlib.contextmanager
def open_lab(workdir: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    lab = SfuLab(workdir, **kwargs).start()
    try:
        yield lab
    finally:
        lab.close()


def signal_bot(bot: BotProcess, sig: int = signal.SIGSTOP) -> None:
    """Pause (SIGSTOP) or resume (SIGCONT) a bot: a frozen member."""
    os.kill(bot.proc.pid, sig)


def settle(seconds: float) -> None:
    """Let media flow for a while (a measurement window, never an assertion's wait)."""
    time.sleep(seconds)
