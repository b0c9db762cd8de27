"""Start and stop real sdparta processes for tests and benchmarks (stopped by PID, always)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PortalProcess:
    proc: subprocess.Popen[str]
    url: str
    data: Path
    #: an https portal: the SHA-256 fingerprint it printed (``AB:CD:…``), the start lines read after
    #: the URL (up to and including the fingerprint line), and what a client must trust to reach it
    fingerprint: str | None = None
    lines: list[str] = field(default_factory=list)
    verify: ssl.SSLContext | bool = True

    def stop(self) -> None:
        stop_process(self.proc)

    def client(self, **kwargs: Any) -> Any:
        """An ``httpx.Client`` that trusts this portal (its certificate, when it is https)."""
        import httpx

        return httpx.Client(verify=self.verify, **kwargs)


def served_certificate(host: str, port: int) -> bytes:
    """The DER certificate a TLS server presents (read from the handshake, nothing verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def sha256_fingerprint(der: bytes) -> str:
    """``AB:CD:…``, the way ``sdparta portal`` prints a certificate's SHA-256."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def start_portal(data: Path, *, subscription: bool = True, port: int = 0, host: str = "127.0.0.1",
                 extra: list[str] | None = None, argv_prefix: Sequence[str] = (),
                 env: dict[str, str] | None = None, ca_file: str | Path | None = None,
                 fingerprint: str | None = None) -> PortalProcess:
    """Run `sdparta portal` and wait for the URL it prints first.

    An https portal (``extra`` with ``--tls …``) is trusted through ``ca_file`` (a PEM certificate
    or CA) or ``fingerprint`` (the SHA-256 its certificate must have: the served certificate is
    read from a handshake, compared, then trusted as is); either way the portal must print the
    fingerprint of the certificate it serves. ``env`` replaces the child's environment."""
    args = [*argv_prefix, PYTHON, "-m", "sdparta", "portal", "--host", host, "--port", str(port),
            "--data", str(data)]
    if not subscription:
        args.append("--no-subscription")
    args += extra or []
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(("http://", "https://")):
        _fail(proc, f"portal did not start: {line!r}")
    running = PortalProcess(proc, line, data)
    if line.startswith("https://"):
        try:
            _trust(running, ca_file, fingerprint)
        except BaseException:
            stop_process(proc)
            raise
    return running


def _fail(proc: subprocess.Popen[str], what: str) -> NoReturn:
    if proc.poll() is None:
        proc.terminate()
    error = proc.stderr.read() if proc.stderr else ""  # read before stop_process closes the pipe
    stop_process(proc)
    raise RuntimeError(f"{what} {error}")


def _trust(running: PortalProcess, ca_file: str | Path | None, fingerprint: str | None) -> None:
    """Read the start output up to the fingerprint line and set ``running.verify``."""
    assert running.proc.stdout is not None
    for _ in range(20):  # the fingerprint follows the summary line; a bounded read, never a hang on EOF
        line = running.proc.stdout.readline()
        if not line:
            _fail(running.proc, f"https portal ended before printing its fingerprint: {running.lines!r}")
        running.lines.append(line.rstrip("\n"))
        found = re.match(r"TLS certificate SHA-256 ([0-9A-F:]{95}) ", line)
        if found:
            running.fingerprint = found.group(1)
            break
    else:
        raise AssertionError(f"no TLS fingerprint line in the portal's start output: {running.lines!r}")
    if ca_file is not None:
        running.verify = ssl.create_default_context(cafile=str(ca_file))
    elif fingerprint is not None:
        parts = urlsplit(running.url)
        der = served_certificate(parts.hostname or "127.0.0.1", parts.port or 443)
        if sha256_fingerprint(der) != fingerprint.upper():
            raise AssertionError(f"the portal serves a certificate with SHA-256 {sha256_fingerprint(der)}, "
                                 f"expected {fingerprint}")
        running.verify = ssl.create_default_context(cadata=der)
    else:
        raise ValueError("an https portal needs ca_file= or fingerprint= to be trusted")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: never leave a child behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass
class BotProcess:
    name: str
    proc: subprocess.Popen[str]
    report_path: Path
    wav_path: Path | None
    log_path: Path
    args: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.report_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def stop(self) -> int:
        stop_process(self.proc, timeout=20)
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_bot(workdir: Path, room: str, portals: list[str], name: str, *, tone: float | None = 440.0,
              video: str = "pattern", chat: str | None = None, record: bool = True,
              extra: list[str] | None = None, argv_prefix: Sequence[str] = ()) -> BotProcess:
    """A real `sdparta bot` process (``argv_prefix`` e.g. runs it in a network namespace)."""
    report = workdir / f"{name}.json"
    wav = workdir / f"{name}.wav" if record else None
    log = workdir / f"{name}.log"
    args = [*argv_prefix, PYTHON, "-m", "sdparta", "bot", room, "--name", name, "--report", str(report),
            "--video", video, "--audio", f"tone:{tone}" if tone else "none"]
    for url in portals:
        args += ["--portal", url]
    if wav is not None:
        args += ["--record-audio", str(wav)]
    if chat:
        args += ["--chat", chat]
    args += extra or []
    env = {**os.environ, "SDPARTA_LOG": os.environ.get("SDPARTA_LOG", "INFO")}
    with log.open("w") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, text=True, env=env)
    return BotProcess(name, proc, report, wav, log, args)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             diagnostics: Callable[[], str] | None = None) -> Any:
    """Poll a condition until it holds and return its (truthy) value; fail with what was awaited and the
    diagnostics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    detail = diagnostics() if diagnostics else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")


def peers_by_name(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The newest peer record per remote name (a rejoin creates a second one)."""
    result: dict[str, dict[str, Any]] = {}
    for peer in (report or {}).get("peers", []):
        result[peer["name"]] = peer
    return result


def peers_seen_by_name(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Like ``peers_by_name``, also counting peers that have left the live list since (``departed``:
    a leaver is listed for a while, then only recorded there); a live record wins."""
    result: dict[str, dict[str, Any]] = {}
    for peer in [*(report or {}).get("departed", []), *(report or {}).get("peers", [])]:
        result[peer["name"]] = peer
    return result
