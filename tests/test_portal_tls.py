"""`sdparta portal` over real HTTPS: --tls-cert/--tls-key and --tls self-signed, checked before the
portal starts; the printed fingerprint is the served certificate's; the self-signed certificate is
kept, and remade when it expires or the names it must cover change; the project's own store client
writes and gets pushes (wss://) through it."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import netguard
from support.procs import PYTHON, PortalProcess, served_certificate, sha256_fingerprint, start_portal

INDEX = """<!doctype html><html><head><script type="importmap">{"imports": {"app/": "./js/"}}</script></head>
<body><script type="module" src="./js/main.js"></script></body></html>"""


@pytest.fixture()
def state(tmp_path: Path) -> Path:
    """The user state dir (XDG_STATE_HOME) where the portal keeps its self-signed certificate."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture()
def web_dir(tmp_path: Path) -> Path:
    """A page of the test's own (the package's page is another agent's work in progress)."""
    root = tmp_path / "web"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "js" / "main.js").write_text('import { x } from "app/x.js";\nconsole.log(x);\n')
    (root / "js" / "x.js").write_text("export const x = 1;\n")
    return root


def env_with(state: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(state)}


def kept(state: Path) -> tuple[Path, Path]:
    folder = state / "sdparta" / "portal-tls"
    return folder / "cert.pem", folder / "key.pem"


def self_signed(tmp_path: Path, state: Path, *, host: str = "127.0.0.1",
                extra: list[str] | None = None) -> PortalProcess:
    """A portal with --tls self-signed; clients trust the certificate file it keeps (which exists
    once the URL is printed: start_portal loads it after reading the fingerprint line)."""
    return start_portal(tmp_path / "p.sqlite3", host=host, extra=["--tls", "self-signed", *(extra or [])],
                        env=env_with(state), ca_file=kept(state)[0])


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "0.0.0.0" else host), parts.port or 443


def served(portal: PortalProcess) -> x509.Certificate:
    return x509.load_der_x509_certificate(served_certificate(*address_of(portal.url)))


def covered_addresses(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def note_of(portal: PortalProcess) -> str:
    return portal.lines[-1]


# ------------------------------------------------------------------------------ the fingerprint
def test_printed_fingerprint_is_the_served_certificate(tmp_path: Path, state: Path) -> None:
    portal = self_signed(tmp_path, state)
    try:
        assert portal.url.startswith("https://127.0.0.1:")
        der = served_certificate(*address_of(portal.url))  # from the TLS handshake, nothing verified
        assert portal.fingerprint == sha256_fingerprint(der)
        assert "compare it with what the browser shows" in note_of(portal)
        # the certificate served is the kept file, and a client trusting that file gets through
        cert_file = x509.load_pem_x509_certificate(kept(state)[0].read_bytes())
        assert cert_file.public_bytes(serialization.Encoding.DER) == der
        with portal.client() as client:
            root = client.get(portal.url + "/")
        assert root.status_code == 200 and root.headers["skynet-portal-api"] == portal.url
    finally:
        portal.stop()


def test_a_wrong_fingerprint_is_noticed(tmp_path: Path, state: Path) -> None:
    """start_portal's fingerprint= check compares with the handshake (what a test relies on)."""
    with pytest.raises(AssertionError, match="serves a certificate with SHA-256"):
        start_portal(tmp_path / "p.sqlite3", extra=["--tls", "self-signed"], env=env_with(state),
                     fingerprint=":".join(["00"] * 32))


# ------------------------------------------------------------------------------ self-signed, kept
def test_self_signed_is_kept_then_remade_when_expired_or_names_change(tmp_path: Path, state: Path) -> None:
    cert_path, key_path = kept(state)
    first = self_signed(tmp_path, state)
    try:
        assert "made a new self-signed certificate" in note_of(first)
        fp1 = first.fingerprint
    finally:
        first.stop()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700

    again = self_signed(tmp_path, state)
    try:
        assert again.fingerprint == fp1 and "the kept self-signed certificate" in note_of(again)
        assert sha256_fingerprint(served_certificate(*address_of(again.url))) == fp1
    finally:
        again.stop()

    # expired: the same key and names, validity in the past → a new certificate, valid now
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    old = x509.load_pem_x509_certificate(cert_path.read_bytes())
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(past - datetime.timedelta(days=365)).not_valid_after(past)
               .add_extension(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                              critical=False).sign(key, hashes.SHA256()))
    cert_path.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    renewed = self_signed(tmp_path, state)
    try:
        assert "expires within a day" in note_of(renewed)
        assert renewed.fingerprint not in (fp1, sha256_fingerprint(expired.public_bytes(serialization.Encoding.DER)))
        now_served = served(renewed)
        assert now_served.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
        assert sha256_fingerprint(now_served.public_bytes(serialization.Encoding.DER)) == renewed.fingerprint
        fp2 = renewed.fingerprint
    finally:
        renewed.stop()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    # another address to cover (--host 127.0.0.2) → remade, covering it; kept on the next start
    moved = self_signed(tmp_path, state, host="127.0.0.2")
    try:
        assert "names/addresses to cover changed" in note_of(moved) and moved.fingerprint != fp2
        assert "127.0.0.2" in covered_addresses(served(moved))
        with moved.client() as client:  # hostname check on: the new certificate covers 127.0.0.2
            assert client.get(moved.url + "/").status_code == 200
        fp3 = moved.fingerprint
    finally:
        moved.stop()
    same = self_signed(tmp_path, state, host="127.0.0.2")
    try:
        assert same.fingerprint == fp3 and "the kept self-signed certificate" in note_of(same)
    finally:
        same.stop()


# ------------------------------------------------------------------------------ bad files: exit 2
def make_pair(folder: Path, name: str, *, days: float = 30) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 valid for ``days`` (negative: expired) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)) if days > 0 else (
        now + datetime.timedelta(days=days - 10), now + datetime.timedelta(days=days))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    good_cert, good_key = make_pair(tmp_path, "good")
    _other_cert, other_key = make_pair(tmp_path, "other")
    old_cert, old_key = make_pair(tmp_path, "old", days=-1)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(os.urandom(300))
    half = tmp_path / "half.pem"
    half.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    locked = tmp_path / "locked"
    locked.mkdir()  # a directory: unreadable as a file even for root (chmod 000 is not, as root)
    key = serialization.load_pem_private_key(good_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    return {"cert": good_cert, "key": good_key, "other_key": other_key, "old_cert": old_cert, "old_key": old_key,
            "garbage": garbage, "half": half, "locked": locked, "missing": tmp_path / "missing.pem",
            "encrypted": encrypted}


BAD = [
    ("missing cert", ["--tls-cert", "{missing}", "--tls-key", "{key}"], "--tls-cert {missing}: cannot read it"),
    ("missing key", ["--tls-cert", "{cert}", "--tls-key", "{missing}"], "--tls-key {missing}: cannot read it"),
    ("unreadable cert", ["--tls-cert", "{locked}", "--tls-key", "{key}"], "--tls-cert {locked}: cannot read it"),
    ("unreadable key", ["--tls-cert", "{cert}", "--tls-key", "{locked}"], "--tls-key {locked}: cannot read it"),
    ("garbage cert", ["--tls-cert", "{garbage}", "--tls-key", "{key}"], "--tls-cert {garbage}: not a PEM certificate"),
    ("truncated cert", ["--tls-cert", "{half}", "--tls-key", "{key}"], "--tls-cert {half}: not a PEM certificate"),
    ("garbage key", ["--tls-cert", "{cert}", "--tls-key", "{garbage}"], "--tls-key {garbage}: not a PEM private key"),
    ("a certificate as key", ["--tls-cert", "{cert}", "--tls-key", "{cert}"],
     "--tls-key {cert}: not a PEM private key"),
    ("key of another cert", ["--tls-cert", "{cert}", "--tls-key", "{other_key}"],
     "--tls-key {other_key} does not belong to the certificate {cert}"),
    ("encrypted key", ["--tls-cert", "{cert}", "--tls-key", "{encrypted}"], "the key is encrypted"),
    ("expired cert", ["--tls-cert", "{old_cert}", "--tls-key", "{old_key}"], "--tls-cert {old_cert}: expired on"),
    ("cert without key", ["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
    ("key without cert", ["--tls-key", "{key}"], "--tls-cert and --tls-key go together"),
    ("both ways", ["--tls", "self-signed", "--tls-cert", "{cert}", "--tls-key", "{key}"], "exclude each other"),
    ("unknown mode", ["--tls", "letsencrypt"], "--tls: invalid choice: 'letsencrypt'"),
]


def run_portal_command(tmp_path: Path, argv: list[str],
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "sdparta", "portal", "--port", "0", "--data", str(tmp_path / "x.sqlite3"),
                           *argv], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(("case", "argv", "expected"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_tls_files_are_one_line_and_exit_2(tmp_path: Path, files: dict[str, Path], case: str,
                                               argv: list[str], expected: str) -> None:
    names = {k: str(v) for k, v in files.items()}
    done = run_portal_command(tmp_path, [a.format(**names) for a in argv])
    lines = done.stderr.splitlines()
    assert done.returncode == 2, (case, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("sdparta portal: "), (case, lines)
    assert expected.format(**names) in lines[0], (case, lines)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "x.sqlite3").exists()  # nothing started


def test_a_state_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state dir should be")
    done = run_portal_command(tmp_path, ["--tls", "self-signed"], env=env_with(blocker))
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("sdparta portal: --tls self-signed: cannot write the certificate in ")
    assert done.stdout == ""


def test_a_given_pair_is_served_as_is(tmp_path: Path, files: dict[str, Path]) -> None:
    portal = start_portal(tmp_path / "p.sqlite3", extra=["--tls-cert", str(files["cert"]), "--tls-key",
                                                         str(files["key"])], ca_file=files["cert"])
    try:
        der = x509.load_pem_x509_certificate(files["cert"].read_bytes()).public_bytes(serialization.Encoding.DER)
        assert portal.fingerprint == sha256_fingerprint(der) == sha256_fingerprint(served_certificate(
            *address_of(portal.url)))
        with portal.client() as client:
            assert client.get(portal.url + "/").status_code == 200
    finally:
        portal.stop()


# ------------------------------------------------------------------------------ the store client over TLS
CLIENT = textwrap.dedent("""
    import asyncio, json, sys
    from sdparta.store import PortalClient, StoreUnavailable
    from sdparta.store.crypto import KeyPair, hash_data_key, sign_entry

    async def main(url):
        key, slot = KeyPair.from_seed("tls-test"), hash_data_key("tls-slot")
        reader, writer = PortalClient(url), PortalClient(url)
        sub = await reader.open_subscription()
        out = {"push": sub is not None}
        try:
            await writer.set_entry(sign_entry(key, slot, b"first", 1))
            await sub.add(key.public_key, slot)
            updates = aiter(sub.updates())
            first = await asyncio.wait_for(anext(updates), 30)  # the current value, on subscribe
            await writer.set_entry(sign_entry(key, slot, b"second", 2))
            second = await asyncio.wait_for(anext(updates), 30)  # pushed over wss://
            got = await PortalClient(url).get_entry(key.public_key, slot)
            out.update(first=first.data.decode(), second=second.data.decode(), read=got.data.decode(),
                       revision=got.revision, ws=sub.ws_url)
        finally:
            await sub.aclose()
            await reader.aclose()
            await writer.aclose()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
""")


def test_registry_write_and_push_over_tls(tmp_path: Path, state: Path) -> None:
    portal = self_signed(tmp_path, state)
    try:
        cert = kept(state)[0]
        # a terminal client trusts a self-signed portal through SSL_CERT_FILE (httpx and aiohttp read it)
        done = subprocess.run([PYTHON, "-c", CLIENT, portal.url], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SSL_CERT_FILE": str(cert)})
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result == {"push": True, "first": "first", "second": "second", "read": "second", "revision": 2,
                          "ws": portal.url.replace("https://", "wss://") + "/skynet/registry/subscription"}
        # the same client without trusting the certificate is refused: verification is on
        refused = subprocess.run([PYTHON, "-c", CLIENT, portal.url], capture_output=True, text=True, timeout=120,
                                 env={k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"})
        assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
        # skydb through the CLI, the way a user would check a portal
        env = {**os.environ, "SSL_CERT_FILE": str(cert), "SDPARTA_CONFIG": str(tmp_path / "absent.toml")}
        sdparta = [PYTHON, "-m", "sdparta", "skydb"]
        put = subprocess.run([*sdparta, "set", "--portal", portal.url, "--seed", "s", "k", '{"over": "tls"}'],
                             capture_output=True, text=True, timeout=120, env=env)
        assert put.returncode == 0, put.stderr
        get = subprocess.run([*sdparta, "get", "--portal", portal.url, "--seed", "s", "k"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert get.returncode == 0 and json.loads(get.stdout) == {"over": "tls"}, get.stderr
    finally:
        portal.stop()


# ------------------------------------------------------------------------------ every interface
@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_all_interfaces_print_the_page_at_each_lan_address(tmp_path: Path, state: Path, web_dir: Path,
                                                           host: str) -> None:
    version = 4 if host == "0.0.0.0" else 6
    # this machine's addresses from /proc (the netguard's reading), not from the code under test
    lan = sorted(str(a) for a in netguard.own_addresses()
                 if a.version == version and not (a.is_loopback or a.is_link_local))
    if not lan:
        pytest.skip(f"this machine has no non-loopback IPv{version} address")
    portal = start_portal(tmp_path / "p.sqlite3", host=host, env=env_with(state), ca_file=kept(state)[0],
                          extra=["--tls", "self-signed", "--web-dir", str(web_dir)])
    try:
        assert portal.proc.stdout is not None
        port = address_of(portal.url)[1]
        lines = [portal.proc.stdout.readline().strip() for _ in range(2 + len(lan))]
        shown = [line.removeprefix("web page on the LAN: ") for line in lines if line.startswith("web page on the LAN")]
        wanted = [f"https://{a if version == 4 else f'[{a}]'}:{port}/web/" for a in lan]
        assert sorted(shown) == sorted(wanted), lines
        assert any("TLS certificate SHA-256 " + (portal.fingerprint or "?") in line for line in portal.lines)
        covered = covered_addresses(served(portal))
        with portal.client() as client:
            for address, url in zip(lan, wanted, strict=True):
                assert address in covered
                page = client.get(url)  # verified against the kept certificate, hostname = the LAN address
                assert page.status_code == 200 and page.text == INDEX
                assert "script-src 'self' 'sha256-" in page.headers["content-security-policy"]
    finally:
        portal.stop()


def test_a_plain_http_portal_on_all_interfaces_says_https_is_needed(tmp_path: Path, web_dir: Path) -> None:
    lan = [a for a in netguard.own_addresses() if a.version == 4 and not (a.is_loopback or a.is_link_local)]
    if not lan:
        pytest.skip("this machine has no non-loopback IPv4 address")
    portal = start_portal(tmp_path / "p.sqlite3", host="0.0.0.0", extra=["--web-dir", str(web_dir)])
    try:
        assert portal.proc.stdout is not None
        # the summary, the page, the pinned page, one line per LAN address, the note
        lines = [portal.proc.stdout.readline().strip() for _ in range(4 + len(lan))]
        assert sum(line.startswith("web page on the LAN: http://") for line in lines) == len(lan), lines
        assert lines[-1].startswith("note: ") and "--tls self-signed" in lines[-1], lines
        assert not any(line.startswith("TLS certificate") for line in lines)
    finally:
        portal.stop()


def test_the_cli_imports_the_tls_module_only_when_tls_is_asked_for() -> None:
    """Every ``sdparta`` start parses the portal's flags: cryptography's x509 is not loaded for that."""
    done = subprocess.run([sys.executable, "-c", "import sdparta.cli, sys; "
                           "sys.exit('sdparta.portal.tls' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
