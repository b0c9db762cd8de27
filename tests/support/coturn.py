"""Debian's coturn (`turnserver`) with its own config: a static long-term credential user, plain UDP
and TCP listeners (and TLS with a certificate made for the test, if asked), logs and pidfile in the
test's directory. Started and stopped by PID."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.procs import PYTHON, stop_process

USER = "sdparta"
PASSWORD = "lab-secret"
REALM = "sdparta.lab"
TLS_PORT = 5349


def coturn_missing() -> str | None:
    """Why coturn cannot run here (None when it can)."""
    if shutil.which("turnserver") is None:
        return "Debian package coturn (turnserver) is not installed: apt-get install coturn"
    return None


@dataclass
class Coturn:
    proc: subprocess.Popen[str]
    host: str
    port: int
    workdir: Path
    user: str = USER
    password: str = PASSWORD
    ca_file: Path | None = None  # the certificate a client must trust for turns: (when TLS is on)

    def url(self, transport: str = "udp") -> str:
        """``udp``, ``tcp`` or ``tls`` (turns:, TLS over TCP on TLS_PORT)."""
        if transport == "tls":
            return f"turns:{self.host}:{TLS_PORT}"
        suffix = "?transport=tcp" if transport == "tcp" else ""
        return f"turn:{self.host}:{self.port}{suffix}"

    def stun_url(self) -> str:
        return f"stun:{self.host}:{self.port}"

    def log(self) -> str:
        path = self.workdir / "turnserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


def self_signed_certificate(workdir: Path, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` (IP SAN, so TLS hostname checks pass) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sdparta lab TURN {ip}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "turn-cert.pem", workdir / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def write_config(workdir: Path, listen: Sequence[str], port: int, *, loopback_peers: bool = False,
                 tls: tuple[Path, Path] | None = None) -> Path:
    """A turnserver.conf for a lab: no CLI, one static user, relay ports in a small range; TLS on
    TLS_PORT only when a (certificate, key) is given."""
    secure = [f"cert={tls[0]}", f"pkey={tls[1]}", f"tls-listening-port={TLS_PORT}", "no-dtls"] if tls else [
        "no-tls", "no-dtls"]
    lines = [*(f"listening-ip={ip}" for ip in listen), f"relay-ip={listen[0]}",
             f"listening-port={port}", f"alt-listening-port={port + 1}",
             "min-port=49160", "max-port=49400", "lt-cred-mech", f"user={USER}:{PASSWORD}", f"realm={REALM}",
             "fingerprint", "no-cli", *secure, "no-stdout-log", "simple-log",
             f"log-file={workdir / 'turnserver.log'}", f"pidfile={workdir / 'turnserver.pid'}",
             f"userdb={workdir / 'turndb.sqlite'}"]
    if loopback_peers:
        lines.append("allow-loopback-peers")
    conf = workdir / "turnserver.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_coturn(workdir: Path, listen: Sequence[str] = ("127.0.0.1",), port: int = 3478, *,
                 argv_prefix: Sequence[str] = (), loopback_peers: bool = False, tls: bool = False,
                 ready: float = 15.0) -> Coturn:
    """Run turnserver with a config of its own and wait until it answers STUN on ``listen[0]``.
    (``argv_prefix`` runs it, and the readiness probe, in a network namespace.)"""
    workdir.mkdir(parents=True, exist_ok=True)
    certificate = self_signed_certificate(workdir, listen[0]) if tls else None
    conf = write_config(workdir, listen, port, loopback_peers=loopback_peers, tls=certificate)
    proc = subprocess.Popen([*argv_prefix, "turnserver", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    server = Coturn(proc, listen[0], port, workdir, ca_file=certificate[0] if certificate else None)
    probe = [*argv_prefix, PYTHON, "-c",  # a STUN Binding request: any answer means ready
             "import socket,sys;s=socket.socket(2,2);s.settimeout(0.5);"
             "s.sendto(bytes.fromhex('000100002112a442')+bytes(12),(sys.argv[1],int(sys.argv[2])));"
             "s.recvfrom(2048)", listen[0], str(port)]
    deadline = time.monotonic() + ready
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
            return server
        time.sleep(0.2)
    error = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    server.stop()
    raise RuntimeError(f"turnserver did not answer STUN on {listen[0]}:{port}: {error}\n{server.log()[-2000:]}")
