"""TLS for the portal: a given certificate + key (checked up front), or a self-signed one made once
and kept in the user state dir (``--tls self-signed``), regenerated when it expires or when the
names/addresses it must cover change. Browsers give WebCrypto and getUserMedia only to secure
contexts, so a phone on the LAN needs https."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365


@dataclass
class TlsSetup:
    cert: Path
    key: Path
    fingerprint: str
    note: str = ""

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None


def load_pair(cert_path: str | Path, key_path: str | Path) -> TlsSetup:
    """ValueError (one line) when a file is missing, unreadable, not a PEM certificate/key, or the
    key does not belong to the certificate."""
    cert_path, key_path = Path(cert_path).expanduser(), Path(key_path).expanduser()
    try:
        cert = x509.load_pem_x509_certificates(_read(cert_path, "--tls-cert"))[0]
    except ValueError as exc:
        if "cannot read" in str(exc):
            raise
        raise ValueError(f"--tls-cert {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, "--tls-key"), password=None)
    except TypeError:
        raise ValueError(f"--tls-key {key_path}: the key is encrypted; give an unencrypted key") from None
    except ValueError as exc:
        if "cannot read" in str(exc):
            raise
        raise ValueError(f"--tls-key {key_path}: not a PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ValueError(f"--tls-key {key_path} does not belong to the certificate {cert_path}")
    return TlsSetup(cert_path, key_path, fingerprint(cert))


def wanted_names(host: str) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) a self-signed certificate covers for ``--host host``."""
    names, addresses = {"localhost"}, {"127.0.0.1", "::1"}
    hostname = socket.gethostname()
    if hostname and all(part.isalnum() or "-" in part for part in hostname.split(".")):
        names |= {hostname, f"{hostname}.local"}
    if host in ("0.0.0.0", "::", ""):
        addresses |= interface_addresses()
    else:
        try:
            addresses.add(str(ipaddress.ip_address(host)))
        except ValueError:
            names.add(host)
    return names, addresses


def interface_addresses() -> set[str]:
    """This machine's addresses (best effort: the UDP-connect trick for the default route, and the
    host name's addresses; no packet is sent)."""
    found: set[str] = set()
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                found.add(s.getsockname()[0])
        except OSError:
            pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%", 1)[0])
    except OSError:
        pass
    return found


def self_signed(host: str, state_dir: Path | None = None) -> TlsSetup:
    """The kept self-signed certificate, made (or remade) when missing, expired or not covering
    the names and addresses ``host`` needs."""
    folder = (state_dir or Path(platformdirs.user_state_dir("sdparta"))) / "portal-tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    names, addresses = wanted_names(host)
    now = datetime.datetime.now(datetime.UTC)
    note = "made a new self-signed certificate"
    if cert_path.exists() and key_path.exists():
        try:
            setup = load_pair(cert_path, key_path)
            cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = set(san.get_values_for_type(x509.DNSName)), {
                str(a) for a in san.get_values_for_type(x509.IPAddress)}
            if cert.not_valid_after_utc - now < datetime.timedelta(days=1):
                note = "the kept self-signed certificate expired: made a new one"
            elif have != (names, addresses):
                note = "the names/addresses to cover changed: made a new self-signed certificate"
            else:
                setup.note = "kept self-signed certificate"
                return setup
        except (ValueError, x509.ExtensionNotFound, OSError):
            note = "the kept self-signed certificate was unreadable: made a new one"
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sdparta portal {socket.gethostname()}"[:64])])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(tmp_key, 0o600)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
    return TlsSetup(cert_path, key_path, fingerprint(cert), note)
