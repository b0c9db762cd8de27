"""The browser page in a real call with terminal bots (issue 13): headless Debian Chromium with fake
media, the real ``sdparta portal`` serving the page, real ``sdparta bot`` processes.

Chromium and the portal run in one network namespace, the bots in another, joined by a veth pair with
no route out (tests/support/browser.py CallNamespaces). The page is the portal's own ``/web/`` at
http://127.0.0.1 (a secure context) and uses that portal as its network; the bots reach the same portal
over the veth. Chromium's microphone is a WAV file with a tone the test writes; its camera is
Chromium's fake device. One Chromium (one page per test) and one portal are shared by the tests.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sdparta.media.analysis import read_wav, tone_power
from support.browser import BASE_ARGS, FAKE_MEDIA_ARGS, CallNamespaces, browser_unavailable
from support.procs import BotProcess, PortalProcess, peers_seen_by_name, start_bot, start_portal, wait_for

pytestmark = pytest.mark.skipif(browser_unavailable() is not None, reason=browser_unavailable() or "")

BROWSER_TONE = 880.0
TONES = {"bot1": 440.0, "bot2": 660.0}
DEADLINE = 90.0  # generous: a loaded 2-core machine runs Chromium, a portal and two bots
PASSWORD = "pw-of-the-web-call"


def write_tone(path: Path, freq: float, seconds: float = 20.0, rate: int = 48000) -> Path:
    """A mono 16-bit WAV of a sine tone (Chromium loops the fake capture file)."""
    frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate)))
                      for i in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


@dataclass
class Lab:
    ns: CallNamespaces
    portal: PortalProcess
    port: int
    browser: Any
    workdir: Path
    launch: Callable[..., Any]
    devices: dict[str, Any]
    pages: list[Any] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/web/"

    def link(self, room: str, fragment: str = "") -> str:
        """The page's shareable link for ``room``, always with ``ice=`` (no STUN server): no test lets the
        page name the public STUN default (the namespaces have no route to it anyway)."""
        return f"{self.page_url}#room={room}&pw={PASSWORD}&ice={fragment}"

    @property
    def bot_portal(self) -> str:
        return f"http://{self.ns.browser_ip}:{self.port}"

    def bot(self, room: str, name: str, portals: list[str] | None = None, **kwargs: Any) -> BotProcess:
        extra = ["--password", PASSWORD, *kwargs.pop("extra", [])]
        return start_bot(self.workdir, room, [self.bot_portal] if portals is None else portals, name, extra=extra,
                         argv_prefix=self.ns.peer_prefix(), **kwargs)


def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE,
          diagnostics: Callable[[], str] | None = None) -> Any:
    return wait_for(predicate, timeout, what, interval=0.25, diagnostics=diagnostics)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from playwright.sync_api import sync_playwright

    workdir = tmp_path_factory.mktemp("web-call")
    tone = write_tone(workdir / "browser-tone.wav", BROWSER_TONE)
    with CallNamespaces(workdir) as ns, sync_playwright() as pw:
        portal = start_portal(workdir / "portal.sqlite3", host="0.0.0.0", argv_prefix=ns.browser_prefix())
        browser = None
        try:
            port = int(portal.url.rsplit(":", 1)[1])
            def launch(*args: str) -> Any:
                return pw.chromium.launch(executable_path=str(ns.wrapper), args=[
                    *BASE_ARGS, f"--use-file-for-fake-audio-capture={tone}",
                    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required", *args])

            browser = launch(*FAKE_MEDIA_ARGS)
            yield Lab(ns, portal, port, browser, workdir, launch, pw.devices)
        finally:
            if browser is not None:
                browser.close()
            portal.stop()


class Page:
    """One tab of the page, with what it logged."""

    def __init__(self, lab: Lab, context: Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        # an empty registry slot is a 404 (the Skynet API's answer), which Chromium logs as a failed load
        self.page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                     if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)

    def report(self) -> dict[str, Any] | None:
        return self.page.evaluate("globalThis.sdparta && globalThis.sdparta.report()")  # type: ignore[no-any-return]

    def pairs(self) -> dict[str, dict[str, Any]]:
        report = self.report() or {}
        return {p["name"]: p for p in [*report.get("departed", []), *report.get("pairs", [])]}

    def join(self, url: str, name: str) -> None:
        self.page.goto(url)
        self.page.fill("input[name=name]", name)
        self.page.click("[data-testid=join]")
        self.page.wait_for_selector("[data-testid=call]", timeout=DEADLINE * 1000)

    def close(self) -> None:
        self.context.close()


@contextmanager
def call_room(lab: Lab, room: str, names: Sequence[str] = tuple(TONES), *, context: Any = None,
              per_bot: Callable[[str], dict[str, Any]] = lambda name: {}, **bot_kwargs: Any,
              ) -> Iterator[tuple[Page, list[BotProcess]]]:
    """Bots (each with its tone, ``bot_kwargs`` and ``per_bot(name)``) in ``room`` and a page in a new
    context (or ``context``); the bots still running are stopped and the page closed afterwards."""
    bots: list[BotProcess] = []
    page: Page | None = None
    try:
        for name in names:
            bots.append(lab.bot(room, name, tone=TONES.get(name, 440.0), **{**bot_kwargs, **per_bot(name)}))
        page = Page(lab, context if context is not None else lab.browser.new_context())
        yield page, bots
    finally:
        for bot in bots:
            if bot.proc.poll() is None:
                bot.stop()
        if page is not None:
            page.close()


def describe(page: Page, bots: list[BotProcess]) -> str:
    return "\n".join([f"page: {page.report()}", f"page errors: {page.errors[-10:]}", describe_bots(bots)])


def describe_bots(bots: list[BotProcess]) -> str:
    lines = []
    for bot in bots:
        lines.append(f"{bot.name}: {peers_seen_by_name(bot.report())}")
        lines.append(f"{bot.name} log tail: {bot.log_path.read_text()[-1500:] if bot.log_path.exists() else ''}")
    return "\n".join(lines)


def connect_page_and_bots(lab: Lab, page: Page, bots: list[BotProcess], page_name: str) -> Callable[[], str]:
    diag = lambda: describe(page, bots)  # noqa: E731
    until(lambda: all(page.pairs().get(b.name, {}).get("status") == "connected" for b in bots),
          "the page connected to every bot", diagnostics=diag)
    for bot in bots:
        until(lambda bot=bot: peers_seen_by_name(bot.report()).get(page_name, {}).get("status") == "connected",
              f"{bot.name} connected to the page", diagnostics=diag)
    # the page's rows carry the states (the stable test hook)
    states = page.page.eval_on_selector_all("[data-testid=peer]", "rows => rows.map(r => r.dataset.state)")
    assert states == ["connected"] * len(bots), states
    return diag


def pair_timelines(report: dict[str, Any], bots: list[BotProcess], page_name: str) -> str:
    """Each page ↔ bot pair's steps on one clock (ms after the Join tap; the page's from
    performance.timeOrigin, the bot's from its report's started_at: one machine, one clock)."""
    tap = report["timeOrigin"] + report["joinTapAt"]
    lines = []
    for bot in bots:
        bot_report = bot.report() or {}
        pair = next(p for p in report["pairs"] if p["name"] == bot.name)
        steps = [(report["timeOrigin"] + pair["discoveredAt"] + ms - tap, "page", step)
                 for step, ms in [("discovered", 0), *pair["timeline"].items()]]
        peer = peers_seen_by_name(bot_report).get(page_name, {})
        steps += [(1000 * (bot_report["started_at"] + s["t"]) - tap, bot.name, f"{s['kind']} {s['state']}")
                  for s in peer.get("states", []) if s["kind"] in ("peer", "ice_gathering", "connection")]
        timeline = "; ".join(f"{t:.0f} {who} {what}" for t, who, what in sorted(steps))
        lines.append(f"{bot.name} ↔ {page_name}: {timeline}")
    return "\n".join(lines)


def page_hears(page: Page, sid: str, hz: float) -> bool:
    """The page's AnalyserNode for this peer peaks at ``hz`` (one FFT bin is 48000/8192 ≈ 5.9 Hz)."""
    peak = page.page.evaluate("(sid) => globalThis.sdparta.peak(sid)", sid)
    return bool(peak and abs(peak["hz"] - hz) < 12 and peak["overMedianDb"] > 30)


def test_browser_and_two_bots_call(lab: Lab) -> None:
    """All pairs connect; chat both ways; each side hears the other's tone at its pitch; video frames
    both ways; the page's leave is reported `left` by the bots."""
    room = "web-call-room"
    with call_room(lab, room, per_bot=lambda name: {"chat": f"hello from {name}"}) as (page, bots):
        for bot in bots:  # the bots wait in the room: the figure below is a browser joining waiting peers
            until(lambda bot=bot: (bot.report() or {}).get("status") == "joined", f"{bot.name} joined")
        page.join(lab.link(room), "phone")
        diag = connect_page_and_bots(lab, page, bots, "phone")
        report = page.report() or {}
        # ice= in the link: the page names no STUN server, and its connections were given none
        assert report["ownIce"] == [] and report["iceServers"] == [], report["iceServers"]
        assert all(p["iceServers"] == [] for p in report["pairs"]), [p["iceServers"] for p in report["pairs"]]
        figures = {p["name"]: round((p["connectedAt"] - report["joinTapAt"]) / 1000, 3) for p in report["pairs"]}
        steps = {k: round((report[k] - report["joinTapAt"]) / 1000, 3) for k in ("keysAt", "joinedAt")}
        found = {p["name"]: round((p["discoveredAt"] - report["joinTapAt"]) / 1000, 3) for p in report["pairs"]}
        # figures for the report, never asserted
        print(f"join tap → connected (s): {figures}; keys derived, joined: {steps}; bots discovered: {found}")
        # each pair of bots connects too
        for bot in bots:
            others = [b.name for b in bots if b is not bot]
            until(lambda bot=bot, others=others: all(peers_seen_by_name(bot.report()).get(o, {}).get("status")
                                                    == "connected" for o in others),
                  f"{bot.name} connected to the other bot", diagnostics=diag)
        page_pair = {p["name"]: (round((p["connectedAt"] - p["discoveredAt"]) / 1000, 3),
                                 "offers" if p["weOffer"] else "answers", f"gathering {p.get('gatherMs')} ms",
                                 "prepared" if p.get("preparedOffer") else "fresh", p["timeline"])
                     for p in report["pairs"]}
        bot_pair = {b.name: {o: peer.get("connected_after_discovery_s")
                             for o, peer in peers_seen_by_name(b.report()).items()} for b in bots}
        print(f"discovered → connected (s): page {page_pair}; bots {bot_pair}")  # figures, never asserted
        print(pair_timelines(report, bots, "phone"))  # figures, never asserted
        # chat: the bots' greetings reach the page, the page's line reaches both bots
        until(lambda: {c["text"] for c in (page.report() or {}).get("chat", [])} >= {f"hello from {n}" for n in TONES},
              "the bots' chat on the page", diagnostics=diag)
        page.page.fill("[data-testid=chat-input]", "hello from the page")
        page.page.click("[data-testid=chat-send]")
        for bot in bots:
            until(lambda bot=bot: any(c["text"] == "hello from the page" and c["from"] == "phone"
                                      for c in (bot.report() or {}).get("chat_received", [])),
                  f"the page's chat at {bot.name}", diagnostics=diag)
        # the page hears each bot at its pitch
        for bot in bots:
            sid = page.pairs()[bot.name]["sessionId"]
            until(lambda sid=sid, bot=bot: page_hears(page, sid, TONES[bot.name]),
                  f"the page hearing {bot.name}'s {TONES[bot.name]} Hz", diagnostics=diag)
        # video both ways: frames painted on the page, frames decoded by each bot
        until(lambda: all(page.pairs()[b.name]["videoFrames"] > 30 for b in bots), "video frames on the page",
              diagnostics=diag)
        for bot in bots:
            until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("video_frames", 0) > 30,
                  f"the page's video at {bot.name}", diagnostics=diag)
            until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("audio_seconds", 0) > 4,
                  f"4 s of the page's audio at {bot.name}", diagnostics=diag)
        # leave: bye and presence removed; the bots report the page `left`
        page.page.click("[data-testid=leave]")
        page.page.wait_for_selector("[data-testid=left]", timeout=DEADLINE * 1000)
        for bot in bots:
            until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("status") == "left",
                  f"{bot.name} reporting the page left", diagnostics=diag)
    # each bot's recording holds the browser's tone
    for bot in bots:
        samples, rate = read_wav(bot.wav_path)  # type: ignore[arg-type]
        power, own = tone_power(samples, rate, BROWSER_TONE), tone_power(samples, rate, TONES[bot.name])
        assert power > 0.003, f"{bot.name}'s WAV lacks the browser's {BROWSER_TONE} Hz tone ({power:.4f})"
        assert power > 20 * own, f"{bot.name} hears the browser no louder than silence at its own tone"
    assert page.errors == []


def test_a_killed_bot_is_reported_gone_by_the_page(lab: Lab) -> None:
    """A bot SIGKILLed (no bye) goes silent: the page reconnects, then reports it gone once its
    presence record is stale (50 s); the other bot stays connected."""
    with call_room(lab, "web-kill-room", record=False) as (page, bots):
        page.join(lab.link("web-kill-room"), "phone")
        diag = connect_page_and_bots(lab, page, bots, "phone")
        victim, survivor = bots
        victim.kill()
        until(lambda: page.pairs().get(victim.name, {}).get("status") == "gone",
              f"the page reporting {victim.name} gone", timeout=150, diagnostics=diag)
        history = page.pairs()[victim.name]["history"]
        assert "left" not in history, history  # a crash is not a leave
        assert page.pairs()[survivor.name]["status"] == "connected", diag()


def test_receive_only_without_camera_and_microphone_permission(lab: Lab) -> None:
    """Permission refused: the page says it is receive-only and still connects to both bots (its host
    candidates are mDNS names then), hears them and sees their video."""
    denying = lab.launch("--use-fake-ui-for-media-stream=deny")
    try:
        with call_room(lab, "web-recvonly-room", context=denying.new_context()) as (page, bots):
            _receive_only_call(lab, page, bots)
    finally:
        denying.close()


def _receive_only_call(lab: Lab, page: Page, bots: list[BotProcess]) -> None:
    page.join(lab.link("web-recvonly-room"), "viewer")
    media = (page.report() or {})["media"]
    assert not media["audio"] and not media["video"] and "receive-only" in media["problem"], media
    assert "receive-only" in page.page.inner_text("[data-testid=media-problem]")
    diag = connect_page_and_bots(lab, page, bots, "viewer")
    for bot in bots:
        sid = page.pairs()[bot.name]["sessionId"]
        until(lambda sid=sid, bot=bot: page_hears(page, sid, TONES[bot.name]),
              f"the page hearing {bot.name}'s {TONES[bot.name]} Hz", diagnostics=diag)
    until(lambda: all(page.pairs()[b.name]["videoFrames"] > 30 for b in bots), "video frames on the page",
          diagnostics=diag)


def _boxes(page: Page, selector: str) -> list[dict[str, float]]:
    return [el.bounding_box() for el in page.page.query_selector_all(selector)]  # type: ignore[misc]


def _assert_on_screen(page: Page, selectors: list[str], width: int, height: int) -> None:
    """Each element is wholly inside the viewport (nothing cut off, reachable without scrolling sideways)."""
    for selector in selectors:
        boxes = _boxes(page, selector)
        assert boxes, f"no {selector} on the page"
        for box in boxes:
            assert box is not None, f"{selector} is not displayed"
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= height + 0.5, (selector, box)
    scroll_width = page.page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"the page scrolls sideways ({scroll_width} > {width} px)"


def test_phone_viewport_join_form_and_call_view(lab: Lab) -> None:
    """Playwright's Pixel 7 profile (412×839): the join form and the call view fit, their buttons are
    on screen and work by tap; the fingerprint is the one the bot sees and survives a reload."""
    room = "web-phone-room"
    bot = lab.bot(room, "bot1", tone=TONES["bot1"], record=False)
    pixel = lab.devices["Pixel 7"]
    width, height = pixel["viewport"]["width"], pixel["viewport"]["height"]
    page = Page(lab, lab.browser.new_context(**pixel))
    try:
        page.page.goto(lab.link(room))
        page.page.wait_for_selector(".me code")
        assert page.page.input_value("input[name=room]") == room  # filled from the link's fragment
        assert page.page.input_value("input[name=password]") == PASSWORD
        fingerprint = page.page.inner_text(".me code")
        page.page.reload()
        page.page.wait_for_selector(".me code")
        assert page.page.inner_text(".me code") == fingerprint  # the IndexedDB identity survives reloads
        page.page.fill("input[name=name]", "pixel")
        page.page.screenshot(path=str(lab.workdir / "phone-join.png"))
        _assert_on_screen(page, ["input[name=room]", "input[name=password]", "input[name=name]",
                                 "[data-testid=join]"], width, height)
        page.page.tap("[data-testid=join]")
        page.page.wait_for_selector("[data-testid=call]", timeout=DEADLINE * 1000)
        diag = connect_page_and_bots(lab, page, [bot], "pixel")
        until(lambda: page.pairs()["bot1"]["videoFrames"] > 10, "video on the phone", diagnostics=diag)
        page.page.screenshot(path=str(lab.workdir / "phone-call.png"))
        _assert_on_screen(page, ["[data-testid=mute]", "[data-testid=camera]", "[data-testid=leave]",
                                 "[data-testid=own-tile]", "[data-testid=tile]"], width, height)
        for selector in ("[data-testid=chat-input]", "[data-testid=chat-send]", "[data-testid=peer]"):
            for box in _boxes(page, selector):  # below the tiles (the page scrolls down), never sideways
                assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, box)
        # the fingerprints are the terminal's: the bot's report names the page's, the page the bot's
        assert peers_seen_by_name(bot.report())["pixel"]["fingerprint"] == fingerprint
        row = page.page.query_selector("[data-testid=peer]")
        assert row.get_attribute("data-fingerprint") == (bot.report() or {})["fingerprint"]
        page.page.tap("[data-testid=mute]")
        assert page.page.get_attribute("[data-testid=mute]", "aria-pressed") == "true"
        assert (page.report() or {})["media"]["muted"]
        # a second browser, on a desktop viewport, in the same room: browser ↔ browser too
        desk = Page(lab, lab.browser.new_context(viewport={"width": 1280, "height": 800}))
        try:
            desk.join(lab.link(room), "desk")
            until(lambda: all(desk.pairs().get(n, {}).get("status") == "connected" for n in ("bot1", "pixel")),
                  "the desktop page connected to the bot and the phone", diagnostics=diag)
            until(lambda: page.pairs().get("desk", {}).get("status") == "connected",
                  "the phone connected to the desktop", diagnostics=diag)
            until(lambda: all(desk.pairs()[n]["videoFrames"] > 10 for n in ("bot1", "pixel")),
                  "the bot's and the phone's video on the desktop", diagnostics=diag)
            desk.page.screenshot(path=str(lab.workdir / "desktop-call.png"))
            _assert_on_screen(desk, ["[data-testid=mute]", "[data-testid=camera]", "[data-testid=leave]",
                                     "[data-testid=own-tile]", "[data-testid=tile]", "[data-testid=peer]",
                                     "[data-testid=chat-input]", "[data-testid=chat-send]"], 1280, 800)
        finally:
            desk.close()
    finally:
        bot.stop()
        page.close()


def test_insecure_origin_explains_itself(lab: Lab) -> None:
    """At a non-loopback http:// address the browser gives no WebCrypto or getUserMedia: the page
    says why and what to do, and offers no join button."""
    page = Page(lab, lab.browser.new_context())
    try:
        page.page.goto(f"http://{lab.ns.browser_ip}:{lab.port}/web/")
        page.page.wait_for_selector("[data-testid=insecure]")
        text = page.page.inner_text("[data-testid=insecure]")
        assert "sdparta portal --tls self-signed" in text and "127.0.0.1" in text, text
        assert page.page.query_selector("[data-testid=join]") is None
        assert page.page.evaluate("document.documentElement.dataset.core") == "insecure"
    finally:
        page.close()


def test_browser_and_two_bots_over_a_nostr_relay(lab: Lab) -> None:
    """The same call with no portal at all: a real Nostr relay (PyPI nostr-relay) in the browser's
    namespace carries the room; the page's link names the relay and turns the portal off."""
    from support.nostr_relay import start_relay

    relay = start_relay(lab.workdir / "relay", host="0.0.0.0", argv_prefix=tuple(lab.ns.browser_prefix()))
    room = "web-relay-room"
    bot_relay = f"ws://{lab.ns.browser_ip}:{relay.port}/"
    try:
        with call_room(lab, room, portals=[], record=False, extra=["--relay", bot_relay],
                       per_bot=lambda name: {"chat": f"relayed hello from {name}"}) as (page, bots):
            _relay_call(lab, page, bots, relay.port)
    finally:
        relay.stop()
    assert page.errors == []


def _relay_call(lab: Lab, page: Page, bots: list[BotProcess], relay_port: int) -> None:
    page.join(lab.link("web-relay-room", f"&portal=off&relay=ws://127.0.0.1:{relay_port}/"), "phone")
    assert (page.report() or {})["networks"] == {"portal": None, "relays": [f"ws://127.0.0.1:{relay_port}/"]}
    diag = connect_page_and_bots(lab, page, bots, "phone")
    until(lambda: {c["text"] for c in (page.report() or {}).get("chat", [])}
          >= {f"relayed hello from {n}" for n in TONES}, "the bots' chat on the page", diagnostics=diag)
    page.page.fill("[data-testid=chat-input]", "hello over the relay")
    page.page.click("[data-testid=chat-send]")
    for bot in bots:
        until(lambda bot=bot: any(c["text"] == "hello over the relay"
                                  for c in (bot.report() or {}).get("chat_received", [])),
              f"the page's chat at {bot.name}", diagnostics=diag)
        sid = page.pairs()[bot.name]["sessionId"]
        until(lambda sid=sid, bot=bot: page_hears(page, sid, TONES[bot.name]),
              f"the page hearing {bot.name}'s {TONES[bot.name]} Hz", diagnostics=diag)
        until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("video_frames", 0) > 30,
              f"the page's video at {bot.name}", diagnostics=diag)
    until(lambda: all(page.pairs()[b.name]["videoFrames"] > 30 for b in bots), "video frames on the page",
          diagnostics=diag)
    page.page.click("[data-testid=leave]")
    page.page.wait_for_selector("[data-testid=left]", timeout=DEADLINE * 1000)
    for bot in bots:
        until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("status") == "left",
              f"{bot.name} reporting the page left", diagnostics=diag)


def test_the_rooms_shared_turn_relay_is_taken(lab: Lab) -> None:
    """A bot shares a TURN relay with the room (--share-turn writes the sealed settings slot before it
    announces): the page reads the settings, uses that relay (it has none of its own) and says so.
    Nothing listens at the relay's address, so the call still connects directly."""
    room = "web-turn-room"
    turn = f"turn:{lab.ns.browser_ip}:3478?transport=udp"
    with call_room(lab, room, ["bot1"], record=False,
                   extra=["--turn", turn, "--turn-user", "sdparta", "--turn-password", "secret", "--share-turn"],
                   ) as (page, (bot,)):
        until(lambda: bool((bot.report() or {}).get("status") == "joined"), "the bot joined (settings shared)")
        page.join(lab.link(room), "phone")
        connect_page_and_bots(lab, page, [bot], "phone")
        report = page.report() or {}
        assert turn in report["iceServers"], report
        assert any(n.startswith(f"using the room's TURN relay {turn}") for n in report["notices"]), report["notices"]


def test_the_identicon_is_drawn_as_the_terminal_draws_it(lab: Lab) -> None:
    """The join form's identicon canvas holds, cell for cell, the terminal's identicon of the page's
    fingerprint (ui/identicon.py: the same glyph levels, the same colours; empty cells transparent)."""
    from sdparta.ui.identicon import identicon_colours, identicon_grid

    page = Page(lab, lab.browser.new_context())
    try:
        page.page.goto(lab.page_url)
        page.page.wait_for_selector(".me canvas")
        fingerprint = page.page.inner_text(".me code")
        pixels = page.page.eval_on_selector(".me canvas", """c => {
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            const out = [];
            for (let y = 0; y < c.height; y++) {
              const row = [];
              for (let x = 0; x < c.width; x++) {
                const i = 4 * (y * c.width + x);
                row.push(d[i + 3] === 0 ? null : "#" + [d[i], d[i + 1], d[i + 2]]
                  .map(v => v.toString(16).padStart(2, "0")).join(""));
              }
              out.push(row);
            }
            return out;
        }""")
        colours = identicon_colours(fingerprint)
        expected = [[None if glyph == " " else colours[glyph] for glyph in row] for row in identicon_grid(fingerprint)]
        assert pixels == expected
    finally:
        page.close()


def test_an_outage_is_survived_by_an_ice_restart(lab: Lab) -> None:
    """The link between the page and the bot goes down for a while: the page goes `reconnecting` (the
    data channel falls silent) and the offerer starts restarting ICE; once the network is back the
    pair is `connected` again on both sides (through a restart, or the old path coming back first),
    and chat still flows."""
    room = "web-outage-room"
    try:
        with call_room(lab, room, ["bot1"], record=False, extra=["--echo-chat"]) as (page, (bot,)):
            page.join(lab.link(room), "phone")
            diag = connect_page_and_bots(lab, page, [bot], "phone")
            lab.ns.set_link(False)
            try:
                until(lambda: page.pairs()["bot1"]["status"] == "reconnecting", "the page reconnecting",
                      diagnostics=diag)
            finally:
                lab.ns.set_link(True)
            until(lambda: page.pairs()["bot1"]["status"] == "connected", "the page connected again", timeout=120,
                  diagnostics=diag)
            until(lambda: peers_seen_by_name(bot.report()).get("phone", {}).get("status") == "connected",
                  "the bot connected again", diagnostics=diag)
            pair = page.pairs()["bot1"]
            assert pair["history"][-2:] == ["reconnecting", "connected"], pair["history"]
            page.page.fill("[data-testid=chat-input]", "still here")
            page.page.click("[data-testid=chat-send]")
            until(lambda: any(c["text"] == "heard: still here" for c in (page.report() or {}).get("chat", [])),
                  "the bot's echo after the restart", diagnostics=diag)
    finally:
        lab.ns.set_link(True)



def _urls(servers: list[Any] | None) -> list[str]:
    """RTCIceServer urls as the page's connections hold them (a string or a list each)."""
    return [url for s in servers or [] for url in ([s] if isinstance(s, str) else s)]


def test_the_stun_default_is_shown_and_replaceable(lab: Lab) -> None:
    """The join form shows the terminal's public STUN default (engine/defaults.py PUBLIC_STUN) when the
    link names none — a page that is never joined, so nothing is sent to it; a link's ``ice=`` replaces
    it and is exactly what the connections get (read back from ``pc.getConfiguration()``) and what the
    page remembers; ``ice=`` empty gives them none (the three-way call test)."""
    from sdparta.engine.defaults import PUBLIC_STUN

    shown = Page(lab, lab.browser.new_context())
    try:
        shown.page.goto(lab.page_url)
        shown.page.wait_for_selector("input[name=ice]")
        assert shown.page.input_value("input[name=ice]") == PUBLIC_STUN[0]
    finally:
        shown.close()
    own = f"stun:{lab.ns.peer_ip}:3478"  # inside the test's namespaces (nothing answers there)
    with call_room(lab, "web-stun-room", ["bot1"], record=False) as (page, bots):
        page.join(lab.link("web-stun-room", own), "phone")
        connect_page_and_bots(lab, page, bots, "phone")
        report = page.report() or {}
        assert report["ownIce"] == [own] and report["iceServers"] == [own], report["iceServers"]
        assert [_urls(p["iceServers"]) for p in report["pairs"]] == [[own]], report["pairs"]
        again = page.context.new_page()  # the same browser profile, a link without ice=: remembered
        again.goto(lab.page_url)
        again.wait_for_selector("input[name=ice]")
        assert again.input_value("input[name=ice]") == own


def test_the_page_converges_on_the_rooms_newest_settings(lab: Lab) -> None:
    """The page is in the room first. bot1 shares a TURN relay and an SFU entry: the page takes both
    (the relay for its connections, the SFU entry told and kept; it stays peer to peer). bot2 then
    shares another relay — its record keeps bot1's SFU entry (writers merge) and is newer: the page
    converges on it whole (the new relay replaces the old one, the SFU entry is still there)."""
    room = "web-settings-room"
    turn1, turn2 = (f"turn:{lab.ns.browser_ip}:{port}?transport=udp" for port in (3478, 3479))
    sfu = f"ws://{lab.ns.browser_ip}:8188/janus"
    shares = {"bot1": ["--turn", turn1, "--share-sfu", sfu, "--sfu-room", "1234"], "bot2": ["--turn", turn2]}
    page = Page(lab, lab.browser.new_context())
    bots: list[BotProcess] = []
    try:
        page.join(lab.link(room), "phone")
        diag = lambda: describe(page, bots)  # noqa: E731
        for name, first in (("bot1", None), ("bot2", turn1)):
            if first is not None:  # bot2 after the page took bot1's record
                until(lambda first=first: ((page.report() or {}).get("settings") or {}).get("turn") == [first],
                      "the page taking bot1's settings", diagnostics=diag)
            bots.append(lab.bot(room, name, tone=TONES[name], record=False, extra=[
                *shares[name], "--turn-user", "sdparta", "--turn-password", "secret", "--share-turn", "--sfu-at", "0"]))
        until(lambda: ((page.report() or {}).get("settings") or {}).get("turn") == [turn2],
              "the page taking bot2's newer settings", diagnostics=diag)
        report = page.report() or {}
        assert report["settings"]["sfu"] == {"type": "janus", "url": sfu, "room": 1234}, report["settings"]
        assert report["iceServers"] == [turn2], report["iceServers"]  # the newer relay replaced the older
        assert any(n.startswith(f"using the room's TURN relay {turn1}") for n in report["notices"]), report["notices"]
        assert any(n.startswith(f"the room names an SFU (janus {sfu} room 1234") for n in report["notices"])
        connect_page_and_bots(lab, page, bots, "phone")
    finally:
        for bot in bots:
            bot.stop()
        page.close()


WRITE_SETTINGS = """
import asyncio, sys, time
from sdparta.room import wire
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.slots import slot_data_key
from sdparta.store import KeyPair, PortalClient, decode_skylink, sign_entry

async def main(url, room, password, turn):
    keys = RoomKeys.derive(room, password)
    pair, data_key = KeyPair.from_private_bytes(keys.presence_seed), slot_data_key(keys, "settings", 0)
    blob = wire.encode_settings(keys, Identity.generate(), pair.public_key, data_key,
                                [wire.TurnServer(turn, "sdparta", "secret")], int(time.time() * 1000))
    client = PortalClient(url)
    try:
        skylink = decode_skylink(await client.upload_blob(blob))
        current = await client.get_entry(pair.public_key, data_key)
        await client.set_entry(sign_entry(pair, data_key, skylink, current.revision + 1 if current else 0))
    finally:
        await client.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def test_a_settings_record_written_while_nobody_joins_reaches_the_page_by_push(lab: Lab) -> None:
    """The page alone in its room (no newcomer to make it read again): a password holder writes the room's
    settings slot (Python's wire and portal client, from the bots' namespace); the portal pushes the
    entry and the page re-reads and takes the record."""
    import subprocess
    import sys

    room = "web-settings-push-room"
    turn = f"turn:{lab.ns.browser_ip}:3480?transport=udp"
    page = Page(lab, lab.browser.new_context())
    try:
        page.join(lab.link(room), "phone")
        until(lambda: (page.report() or {}).get("push"), "the page's push subscription open")
        pushed = (page.report() or {})["settingsPushed"]
        subprocess.run([*lab.ns.peer_prefix(), sys.executable, "-c", WRITE_SETTINGS, lab.bot_portal, room, PASSWORD,
                        turn], check=True, timeout=DEADLINE, capture_output=True)
        until(lambda: (page.report() or {})["settingsPushed"] > pushed, "the settings entry pushed to the page",
              diagnostics=lambda: str(page.report()))
        until(lambda: ((page.report() or {}).get("settings") or {}).get("turn") == [turn], "the page taking it",
              diagnostics=lambda: str(page.report()))
        assert (page.report() or {})["iceServers"] == [turn]
    finally:
        page.close()


def test_closing_the_tab_says_bye(lab: Lab) -> None:
    """The tab is closed mid-call (no Leave tap): on pagehide the page sends bye on its data channels
    and the byes it sealed (and uploaded) ahead into its pair slots, so the bots report it `left` —
    never `gone` (what a silent page becomes once its presence record is stale)."""
    with call_room(lab, "web-close-room", record=False) as (page, bots):
        page.join(lab.link("web-close-room"), "phone")
        diag = connect_page_and_bots(lab, page, bots, "phone")
        until(lambda: (page.report() or {}).get("byesReady") == len(bots), "the page's byes prepared", diagnostics=diag)
        page.page.close()
        for bot in bots:
            until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("status") in ("left", "gone"),
                  f"{bot.name} reporting the closed page", diagnostics=lambda: describe_bots(bots))
            assert peers_seen_by_name(bot.report())["phone"]["status"] == "left", describe_bots(bots)


def test_over_a_relay_settings_converge_and_a_closed_tab_says_bye(lab: Lab) -> None:
    """The same over a Nostr relay alone: bot1 shares a TURN relay, bot2 (joining after the page took
    it) another, merged into a newer settings event; the page converges on bot2's. Then the tab is
    closed: the prepared bye events and the leaving record reach the relay, the bots report `left`."""
    from support.nostr_relay import start_relay

    relay = start_relay(lab.workdir / "relay-settings", host="0.0.0.0", argv_prefix=tuple(lab.ns.browser_prefix()))
    room = "web-relay-settings-room"
    turn1, turn2 = (f"turn:{lab.ns.browser_ip}:{port}?transport=udp" for port in (3478, 3479))
    page = Page(lab, lab.browser.new_context())
    bots: list[BotProcess] = []
    try:
        page.join(lab.link(room, f"&portal=off&relay=ws://127.0.0.1:{relay.port}/"), "phone")
        diag = lambda: describe(page, bots)  # noqa: E731
        for name, turn, before in (("bot1", turn1, None), ("bot2", turn2, turn1)):
            if before is not None:
                until(lambda before=before: ((page.report() or {}).get("settings") or {}).get("turn") == [before],
                      "the page taking bot1's settings", diagnostics=diag)
            bots.append(lab.bot(room, name, portals=[], tone=TONES[name], record=False, extra=[
                "--relay", f"ws://{lab.ns.browser_ip}:{relay.port}/", "--turn", turn, "--turn-user", "sdparta",
                "--turn-password", "secret", "--share-turn"]))
        until(lambda: ((page.report() or {}).get("settings") or {}).get("turn") == [turn2],
              "the page taking bot2's newer settings", diagnostics=diag)
        assert (page.report() or {})["iceServers"] == [turn2]
        connect_page_and_bots(lab, page, bots, "phone")
        until(lambda: (page.report() or {}).get("byesReady") == len(bots), "the page's byes prepared", diagnostics=diag)
        page.page.close()
        for bot in bots:
            until(lambda bot=bot: peers_seen_by_name(bot.report()).get("phone", {}).get("status") in ("left", "gone"),
                  f"{bot.name} reporting the closed page", diagnostics=lambda: describe_bots(bots))
            assert peers_seen_by_name(bot.report())["phone"]["status"] == "left", describe_bots(bots)
    finally:
        for bot in bots:
            bot.stop()
        page.close()
        relay.stop()
