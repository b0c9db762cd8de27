"""The browser page and the terminal app together (issue 13): the link ``sdparta join`` prints and the
link its lobby shows fill the page's join form, and two browser pages and one ``sdparta join`` app
(driven by Textual's Pilot, with a real Call) hold one call.

As in tests/test_web_call.py, Chromium and the portal run in one network namespace and nothing has a
route out (tests/support/browser.py CallNamespaces, on a subnet of this file's own). The app runs in
this process: its thread is moved into the browser's namespace for the test (``entered``), so its
engine thread (started from there) makes its sockets there, reaches the portal at 127.0.0.1 and
offers host candidates on the namespace's veth address, where Chromium's are too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdparta.config import CallFlags
from support.browser import BASE_ARGS, FAKE_MEDIA_ARGS, CallNamespaces, browser_unavailable, entered
from support.procs import start_portal, wait_for

pytestmark = pytest.mark.skipif(browser_unavailable() is not None, reason=browser_unavailable() or "")

DEADLINE = 120.0  # generous: a loaded 2-core machine runs Chromium with two pages, a portal and the app
# a room name and a password with every character a fragment or URLSearchParams could get wrong
ROOM = "team sync + café/#&=?%"
PASSWORD = "p&w=1 +#%20ü"
LINK = re.compile(r"http://127\.0\.0\.1:\d+/web/#\S+")


def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    return wait_for(predicate, timeout, what)


@pytest.fixture()
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No config file of the user's; the identity is the test's own file."""
    monkeypatch.setenv("SDPARTA_CONFIG", str(tmp_path / "no-config.toml"))
    return tmp_path / "identity.key"


@pytest.fixture()
def call_ns(tmp_path: Path) -> Iterator[tuple[CallNamespaces, str]]:
    """The namespaces and a portal serving the page in the browser's, at 127.0.0.1 there."""
    with CallNamespaces(tmp_path, subnet="10.206.0") as ns:
        portal = start_portal(tmp_path / "portal.sqlite3", host="0.0.0.0", argv_prefix=ns.browser_prefix())
        try:
            yield ns, f"http://127.0.0.1:{portal.url.rsplit(':', 1)[1]}"
        finally:
            portal.stop()


def printed_by_join(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], room: str,
                    flags: CallFlags) -> tuple[str, dict[str, Any]]:
    """What ``sdparta join`` prints before the app takes the screen, and what the app is given (the
    app itself is not run)."""
    import sdparta.ui
    from sdparta.commands.join import join

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(sdparta.ui, "run_join_app", lambda call, **kw: started.append(kw) or 0)
    assert join(room, flags) == 0
    assert len(started) == 1  # the app would have started, with the call
    return capsys.readouterr().out, started[0]


def form(page: Any) -> dict[str, str]:
    return {field: page.input_value(f"input[name={field}]") for field in ("room", "password", "relays", "ice")}


def test_the_printed_link_fills_the_join_form(tmp_path: Path, call_ns: tuple[CallNamespaces, str],
                                             isolated_config: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The line ``sdparta join`` prints holds a link to the first portal that serves the page (a dead
    portal named first is passed over); opened in Chromium, it fills room, password and relays
    exactly; the fragment is not in what the browser asked the portal for."""
    from playwright.sync_api import sync_playwright

    ns, portal = call_ns
    relay = "ws://127.0.0.1:9/r?x=1&y=%2B"
    flags = CallFlags(portals=["http://127.0.0.1:9", portal], relays=[relay], password=PASSWORD,
                      identity=str(isolated_config), video="none", audio="none")
    with entered(ns.browser_ns):
        out, app = printed_by_join(monkeypatch, capsys, ROOM, flags)
    line = next(x for x in out.splitlines() if x.startswith("browser page for this room: "))
    link = LINK.search(line).group(0)  # type: ignore[union-attr]
    assert link.startswith(f"{portal}/web/#"), line  # the second portal: the first does not answer
    assert (app["page_portal"], app["no_page"]) == (portal, None), app  # the app's lobby links the same one
    assert "the link holds the room's password" in line
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(ns.wrapper), args=list(BASE_ARGS))
        try:
            page = browser.new_page()
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url))
            assert link.endswith("&ice="), line  # the call names no STUN server: nor does the page (its
            page.goto(link)  # default is a public one, which no test may ask)
            page.wait_for_selector("[data-testid=join]")
            assert form(page) == {"room": ROOM, "password": PASSWORD, "relays": relay, "ice": ""}
            assert not any("#" in url or "pw=" in url for url in asked), asked
        finally:
            browser.close()


def test_without_a_page_join_says_why(tmp_path: Path, isolated_config: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Only relays: the page needs a portal; a portal that does not answer: said so, no link."""
    only_relays = CallFlags(relays=["ws://127.0.0.1:9/"], identity=str(isolated_config), video="none", audio="none")
    out, _ = printed_by_join(monkeypatch, capsys, "r", only_relays)
    assert "browser page: none for this room (the page needs a portal" in out and "/web/#" not in out
    dead = CallFlags(portals=["http://127.0.0.1:9"], identity=str(isolated_config), video="none", audio="none")
    out, app = printed_by_join(monkeypatch, capsys, "r", dead)
    assert "browser page: none for this room (no portal of the room answered" in out and "/web/#" not in out
    assert app["page_portal"] is None and "no portal of the room answered" in app["no_page"], app


def lobby_plain(app: Any) -> str:
    from textual.widgets import Static

    return str(app.query_one("#lobby", Static).render())


async def wait(pilot: Any, predicate: Callable[[], Any], what: str, timeout: float = DEADLINE,
               diagnostics: Callable[[], str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                 f"{diagnostics() if diagnostics else ''}")
        await pilot.pause(0.2)


async def test_two_browsers_and_the_app_in_one_room(tmp_path: Path, call_ns: tuple[CallNamespaces, str]) -> None:
    """The app alone shows the page's link; the first browser opens that link (room filled, the
    password typed: the app never shows it), the second the printed one (password filled); the app
    then shows both browsers connected, their video frames arriving and drawn, and the two pages are
    connected to the app and to each other."""
    from playwright.async_api import async_playwright

    from sdparta.engine.call import Call, CallConfig
    from sdparta.ui.app import SdpartaApp
    from sdparta.ui.lobby import web_link

    ns, portal = call_ns
    names = ("phone1", "phone2")
    with entered(ns.browser_ns):
        call = Call(CallConfig(room=ROOM, portals=[portal], password=PASSWORD, name="terminal",
                               identity_path=tmp_path / "app-identity.key", video="pattern", audio="tone:300"))
        app = SdpartaApp(call, video_mode="256", fps=8, dump_dir=tmp_path)
        try:
            async with app.run_test(size=(160, 50)) as pilot, async_playwright() as pw:
                await wait(pilot, lambda: LINK.search(lobby_plain(app)), "the page's link in the app's lobby")
                shown = LINK.search(lobby_plain(app)).group(0)  # type: ignore[union-attr]
                assert shown == web_link(ROOM, portal, stun=()), lobby_plain(app)  # ends in ice=: no STUN
                assert "the password is not in this link" in lobby_plain(app)
                browser = await pw.chromium.launch(executable_path=str(ns.wrapper), args=[
                    *BASE_ARGS, *FAKE_MEDIA_ARGS, "--autoplay-policy=no-user-gesture-required"])
                pages = []
                try:
                    printed = web_link(ROOM, portal, password=PASSWORD, stun=())
                    for name, link in zip(names, (shown, printed), strict=True):
                        page = await (await browser.new_context()).new_page()  # own storage: own identity
                        await page.goto(link)  # with ice=: no STUN server, as the call
                        await page.wait_for_selector("[data-testid=join]")
                        assert await page.input_value("input[name=room]") == ROOM
                        filled = await page.input_value("input[name=password]")
                        if link == shown:
                            assert filled == ""
                            await page.fill("input[name=password]", PASSWORD)
                        else:
                            assert filled == PASSWORD
                        await page.fill("input[name=name]", name)
                        await page.click("[data-testid=join]")
                        await page.wait_for_selector("[data-testid=call]", timeout=DEADLINE * 1000)
                        pages.append(page)
                    reports: dict[str, Any] = {}

                    async def refresh() -> None:
                        for name, page in zip(names, pages, strict=True):
                            reports[name] = await page.evaluate("globalThis.sdparta.report()")

                    def diag() -> str:
                        return f"app peers: {app.snapshot_state.peers}\npages: {reports}"

                    def app_peers() -> dict[str, Any]:
                        return {p.name: p for p in app.snapshot_state.peers}

                    def app_connected() -> bool:
                        return all(n in app_peers() and app_peers()[n].status == "connected" for n in names)

                    await wait(pilot, app_connected, "both browsers connected in the app", diagnostics=diag)
                    await wait(pilot, lambda: all(app_peers()[n].video_frames > 20 for n in names),
                               "video frames from both browsers in the app", diagnostics=diag)
                    await wait(pilot, lambda: len(app._tiles) == 2 and all(t.video.cells is not None
                                                                          for t in app._tiles.values()),
                               "both browsers' video drawn in their tiles", diagnostics=diag)
                    # each browser's row in the participant list: its name and key, then its state
                    rows = str(app.query_one("#participants").render()).splitlines()
                    for name in names:
                        at = next(i for i, line in enumerate(rows) if name in line)
                        assert rows[at + 1].strip().startswith("connected"), rows

                    def pages_connected() -> bool:
                        for name in names:
                            pairs = {p["name"]: p for p in (reports.get(name) or {}).get("pairs", [])}
                            wanted = {"terminal", *(n for n in names if n != name)}
                            if not all(pairs.get(w, {}).get("status") == "connected" for w in wanted):
                                return False
                        return True

                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + DEADLINE
                    while not pages_connected():
                        assert loop.time() < deadline, f"the pages did not connect to everyone\n{diag()}"
                        await refresh()
                        await pilot.pause(0.3)
                    # the app's video reaches each page too
                    while not all(next(p for p in reports[n]["pairs"] if p["name"] == "terminal")["videoFrames"] > 10
                                  for n in names):
                        assert loop.time() < deadline, f"the app's video did not reach the pages\n{diag()}"
                        await refresh()
                        await pilot.pause(0.3)
                finally:
                    await browser.close()
                await pilot.press("ctrl+q")
                await wait(pilot, lambda: not call.running, "the engine stopped", timeout=30)
        finally:
            call.stop()


def test_the_lobby_link_has_the_rooms_networks_and_never_the_password() -> None:
    """The lobby's page link: the first portal's /web/, the room and the named relays, no ``pw`` even
    when the room has a password (the app never shows it; it says where the whole link is); public
    relays are not named; with only relays it says the page needs a portal."""
    from urllib.parse import parse_qsl, urlsplit

    from sdparta.engine.state import CallSnapshot, CallStatus
    from sdparta.ui.lobby import lobby_text

    snap = CallSnapshot(room=ROOM, name="me", fingerprint="0000:0000:0000:0000", session_id="s" * 16,
                        portals=("http://127.0.0.1:8787/", "http://127.0.0.1:8788"), relays=("wss://r.example/",),
                        password_set=True, status=CallStatus.JOINED)
    text = lobby_text(snap, time.time(), 200).plain
    link = re.search(r"http://127\.0\.0\.1:8787/web/#\S+", text).group(0)  # type: ignore[union-attr]
    assert parse_qsl(urlsplit(link).fragment) == [("room", ROOM), ("relay", "wss://r.example/")]
    assert "the password is not in this link" in text
    public = CallSnapshot(room=ROOM, name="me", fingerprint="0000:0000:0000:0000", session_id="s" * 16,
                          relays=("wss://nos.example/",), public_relays=True, status=CallStatus.JOINED)
    text = lobby_text(public, time.time(), 200).plain
    assert "/web/#" not in text and "a browser needs a portal" in text
