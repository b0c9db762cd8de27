"""TLS for the portal: a given certificate + key (checked up front), or a self-signed one made once
and kept in the user state dir (``--tls self-signed``), regenerated when it expires or when the
names/addresses it must cover change. Browsers give WebCrypto and getUserMedia only to secure
contexts, so a phone on the LAN needs https."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sdparta.portal.interfaces import ALL_INTERFACES, lan_addresses

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
    """ValueError (one line) when a file is missing, unreadable, not a PEM certificate/key, the key
    does not belong to the certificate, the certificate has expired, or OpenSSL refuses the pair."""
    cert_path, key_path = Path(cert_path).expanduser(), Path(key_path).expanduser()
    cert_pem, key_pem = _read(cert_path, "--tls-cert"), _read(key_path, "--tls-key")
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise ValueError(f"--tls-cert {cert_path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ValueError(f"--tls-key {key_path}: the key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"--tls-key {key_path}: not a PEM private key ({exc})"[:300]) from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ValueError(f"--tls-key {key_path} does not belong to the certificate {cert_path}")
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC):
        raise ValueError(f"--tls-cert {cert_path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}; renew it "
                         "(or use --tls self-signed)")
    setup = TlsSetup(cert_path, key_path, fingerprint(cert))
    try:
        setup.context()
    except (ssl.SSLError, OSError) as exc:  # what OpenSSL itself refuses (e.g. an unsupported key type)
        raise ValueError(f"--tls-cert {cert_path} / --tls-key {key_path}: not usable for TLS ({exc})") from None
    return setup


def wanted_names(host: str) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) a self-signed certificate covers for ``--host host``: localhost,
    this host's name (and its ``.local``), and the address it listens on (every LAN address for
    0.0.0.0 / ``::``)."""
    names, addresses = {"localhost"}, {"127.0.0.1", "::1"}
    hostname = socket.gethostname()
    if hostname and all(part and all(c.isalnum() or c == "-" for c in part) for part in hostname.split(".")):
        names |= {hostname, f"{hostname.split('.')[0]}.local"}
    if host in ALL_INTERFACES:
        addresses |= set(lan_addresses(""))
    else:
        try:
            addresses.add(str(ipaddress.ip_address(host)))
        except ValueError:
            names.add(host)
    return names, addresses


def self_signed(host: str, state_dir: Path | None = None) -> TlsSetup:
    """The kept self-signed certificate, made (or remade) when missing, expired or not covering
    the names and addresses ``host`` needs."""
    folder = (state_dir or Path(platformdirs.user_state_dir("sdparta"))) / "portal-tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    names, addresses = wanted_names(host)
    now = datetime.datetime.now(datetime.UTC)
    note = "made a new self-signed certificate"
    if cert_path.exists() or key_path.exists():
        try:
            cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = set(san.get_values_for_type(x509.DNSName)), {
                str(a) for a in san.get_values_for_type(x509.IPAddress)}
            if cert.not_valid_after_utc - now < datetime.timedelta(days=1):
                note = "the kept self-signed certificate expires within a day: made a new one"
            elif have != (names, addresses):
                note = "the names/addresses to cover changed: made a new self-signed certificate"
            else:
                setup = load_pair(cert_path, key_path)  # the key still belongs to it
                setup.note = "the kept self-signed certificate"
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
            # what strict verifiers (Python 3.13's default VERIFY_X509_STRICT) require of a CA certificate
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    try:
        _write_pair(folder, cert_path, key_path, cert, key)
    except OSError as exc:
        raise ValueError(f"--tls self-signed: cannot write the certificate in {folder} "
                         f"({exc.strerror or exc}); give --tls-cert/--tls-key instead") from None
    return TlsSetup(cert_path, key_path, fingerprint(cert), note)


def _write_pair(folder: Path, cert_path: Path, key_path: Path, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> None:
    """Key (0600, in a 0700 folder) and certificate, each replaced atomically, key first."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp_key = key_path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp_key.unlink()
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(tmp_key, 0o600)  # whatever the umask
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
