"""``sdparta portal --tls self-signed`` makes the page work at a non-loopback address (issue 13): the
counterpart of tests/test_web_call.py's insecure-origin test, where the same page at
``http://<veth address>`` only explains itself.

The portal runs in the browser's namespace (tests/support/browser.py CallNamespaces, no route out) on
every interface with its self-signed certificate (kept under the test's own XDG_STATE_HOME). Chromium
is told to trust exactly that certificate: ``--ignore-certificate-errors-spki-list`` with the base64
SHA-256 of its SubjectPublicKeyInfo (what a user does by comparing the printed fingerprint once),
never a blanket ``--ignore-certificate-errors``. The bot trusts it through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support.browser import BASE_ARGS, FAKE_MEDIA_ARGS, CallNamespaces, browser_unavailable
from support.procs import peers_seen_by_name, start_bot, start_portal, wait_for

pytestmark = pytest.mark.skipif(browser_unavailable() is not None, reason=browser_unavailable() or "")

DEADLINE = 90.0
PASSWORD = "pw-of-the-tls-call"


def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE,
          diagnostics: Callable[[], str] | None = None) -> Any:
    return wait_for(predicate, timeout, what, interval=0.25, diagnostics=diagnostics)


def spki_sha256_base64(cert_pem: Path) -> str:
    """What ``--ignore-certificate-errors-spki-list`` takes: base64 of SHA-256 over the DER SPKI."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_self_signed_portal_makes_the_page_work_at_a_lan_address(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At https://<veth address>/web/ with the portal's certificate trusted: a secure context
    (crypto.subtle, getUserMedia: camera and microphone sent), the page joins and connects with a bot
    both ways with video. Without the certificate trusted the page does not load at all."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    state = tmp_path / "state"
    cert = state / "sdparta" / "portal-tls" / "cert.pem"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))  # the portal keeps its certificate here
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the bot (started with this environment) trusts it
    room = "web-tls-room"
    with CallNamespaces(tmp_path, subnet="10.207.0") as ns, sync_playwright() as pw:
        portal = start_portal(tmp_path / "portal.sqlite3", host="0.0.0.0", argv_prefix=ns.browser_prefix(),
                              extra=["--tls", "self-signed"], ca_file=cert)
        bot = None
        browsers: list[Any] = []
        try:
            port = int(portal.url.rsplit(":", 1)[1])
            url = f"https://{ns.browser_ip}:{port}"
            assert any(line.startswith("TLS certificate SHA-256 ") for line in portal.lines), portal.lines

            def launch(*args: str) -> Any:
                browser = pw.chromium.launch(executable_path=str(ns.wrapper), args=[*BASE_ARGS, *args])
                browsers.append(browser)
                return browser

            # not trusted: the page does not load (Chromium refuses the certificate)
            untrusting = launch().new_page()
            with pytest.raises(PlaywrightError, match="ERR_CERT"):
                untrusting.goto(f"{url}/web/")

            bot = start_bot(tmp_path, room, [url], "bot1", tone=440.0, record=False,
                            extra=["--password", PASSWORD], argv_prefix=ns.peer_prefix())
            browser = launch(*FAKE_MEDIA_ARGS, "--autoplay-policy=no-user-gesture-required",
                             f"--ignore-certificate-errors-spki-list={spki_sha256_base64(cert)}")
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/web/#room={room}&pw={PASSWORD}&ice=")  # ice=: no STUN server (no public one)
            page.wait_for_selector("[data-testid=join]")
            context = page.evaluate("""() => ({secure: isSecureContext, subtle: Boolean(crypto.subtle),
                gum: Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia),
                core: document.documentElement.dataset.core})""")
            assert context == {"secure": True, "subtle": True, "gum": True, "core": "ready"}, context
            assert page.query_selector("[data-testid=insecure]") is None
            page.fill("input[name=name]", "lan-phone")
            page.click("[data-testid=join]")
            page.wait_for_selector("[data-testid=call]", timeout=DEADLINE * 1000)

            def report() -> dict[str, Any]:
                return page.evaluate("globalThis.sdparta.report()") or {}  # type: ignore[no-any-return]

            def pair() -> dict[str, Any]:
                return next((p for p in report().get("pairs", []) if p["name"] == "bot1"), {})

            def diag() -> str:
                log = bot.log_path.read_text()[-1500:] if bot and bot.log_path.exists() else ""
                return f"page: {report()}\nerrors: {errors}\nbot: {bot and bot.report()}\nbot log: {log}"

            media = report()["media"]
            assert media["audio"] and media["video"], media  # getUserMedia gave camera and microphone
            until(lambda: pair().get("status") == "connected", "the page connected to the bot", diagnostics=diag)
            until(lambda: peers_seen_by_name(bot.report()).get("lan-phone", {}).get("status") == "connected",
                  "the bot connected to the page", diagnostics=diag)
            until(lambda: pair().get("videoFrames", 0) > 10, "the bot's video on the page", diagnostics=diag)
            until(lambda: peers_seen_by_name(bot.report()).get("lan-phone", {}).get("video_frames", 0) > 10,
                  "the page's video at the bot", diagnostics=diag)
            assert report()["networks"]["portal"] == url, report()["networks"]
            assert errors == []
        finally:
            for browser in browsers:
                browser.close()
            if bot is not None:
                bot.stop()
            portal.stop()
