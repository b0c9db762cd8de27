"""Real headless Chromium against a real aiortc peer (issue 13's Python-side interop fixes).

Chromium runs in one network namespace and the aiortc side (tests/data/interop/aiortc_peer.py, using
sdparta's end-of-candidates rule) in another, joined by a veth pair with no route out
(tests/support/browser_pair.py). Signalling is carried by the test: page.evaluate ↔ the peer's
stdin/stdout. Without media permission Chromium's host candidates are ``<uuid>.local`` names.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser_pair import BASE_ARGS, FAKE_MEDIA_ARGS, PEER_IP, BrowserPair, pair_unavailable
from support.procs import wait_for

HARNESS = Path(__file__).parent / "data" / "interop"
ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0  # generous: CI is a loaded 2-core machine

pytestmark = pytest.mark.skipif(pair_unavailable() is not None, reason=pair_unavailable() or "")


class Peer:
    """The aiortc process in the peer namespace, started and stopped by PID."""

    def __init__(self, pair: BrowserPair) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tui"), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([*pair.peer_prefix(), sys.executable, str(HARNESS / "aiortc_peer.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, key: str) -> dict[str, Any]:
        for event in self.seen:
            if key in event:
                return event
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(event)
            if key in event:
                return event
        raise AssertionError(f"the aiortc peer never reported {key!r}; events: {self.seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def until(predicate: Callable[[], Any], what: str) -> Any:
    return wait_for(predicate, DEADLINE, what, interval=0.05)


@pytest.fixture
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Peer]]:
    from playwright.sync_api import sync_playwright

    param = getattr(request, "param", "plain")
    args = [*BASE_ARGS, *(FAKE_MEDIA_ARGS if param == "media" else ())]
    with BrowserPair(tmp_path, mdns_answers=param != "unresolvable") as pair, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(pair.wrapper), args=args)
        peer = Peer(pair)
        try:
            page = browser.new_page()
            page.goto((HARNESS / "index.html").as_uri())  # file://: a secure context, no server
            page.wait_for_function("window.interop !== undefined")
            yield page, peer
        finally:
            peer.stop()
            browser.close()


def _candidates(sdp: str) -> list[str]:
    return [line.split(" ")[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def test_browser_offers_without_media_permission_and_its_mdns_candidates_resolve(setup: tuple[Any, Peer]) -> None:
    page, peer = setup
    offer = page.evaluate("interop.offer()")
    hosts = _candidates(offer)
    assert hosts and all(h.endswith(".local") for h in hosts), f"Chromium hides its addresses: {hosts}"
    assert "a=end-of-candidates" not in offer
    peer.send(offer=offer)
    answer = peer.wait_for("answer")
    # aioice keeps a candidate only once its .local name resolved (unresolved ones are dropped)
    assert [["host", h] for h in hosts] == answer["remote"], "the .local names resolved"
    assert answer["safe"], "a remote candidate is known: end-of-candidates is safe"
    assert _candidates(answer["answer"]), "the answer carries local candidates"
    page.evaluate("sdp => interop.accept(sdp)", answer["answer"])
    connected = peer.wait_for("connected")["connected"]
    assert connected["selected"] == ["host", hosts[0]], "connected on the resolved mDNS candidate, not prflx"
    assert page.evaluate("interop.selectedRemote()")["address"] == PEER_IP
    until(lambda: page.evaluate("interop.channelOpen()"), "the browser's channel open")
    page.evaluate("interop.send('from the browser')")
    assert peer.wait_for("message")["message"] == "from the browser"
    peer.send(send="from aiortc")
    until(lambda: "from aiortc" in page.evaluate("interop.state.received"), "aiortc's message in the page")


def test_aiortc_offers_and_the_browser_answers(setup: tuple[Any, Peer]) -> None:
    page, peer = setup
    peer.send(make_offer=True)
    offer = peer.wait_for("offer")["offer"]
    answer = page.evaluate("sdp => interop.answer(sdp)", offer)
    assert all(h.endswith(".local") for h in _candidates(answer))
    peer.send(answer=answer)
    assert peer.wait_for("accepted")["safe"], "the browser's .local candidate resolved"
    peer.wait_for("connected")
    until(lambda: page.evaluate("interop.channelOpen()"), "the browser's channel open")
    peer.send(send="hello browser")
    until(lambda: "hello browser" in page.evaluate("interop.state.received"), "aiortc's message in the page")
    page.evaluate("interop.send('hello aiortc')")
    assert peer.wait_for("message")["message"] == "hello aiortc"


@pytest.mark.parametrize("setup", ["unresolvable"], indirect=True)
def test_unresolvable_mdns_names_connect_through_prflx_with_the_fix(setup: tuple[Any, Peer]) -> None:
    """The browser's mDNS answers are dropped: no remote candidate resolves. sdparta's rule does not
    end the candidates, the answer keeps its own, and the browser's checks make a prflx candidate."""
    page, peer = setup
    offer = page.evaluate("interop.offer()")
    assert _candidates(offer) and all(h.endswith(".local") for h in _candidates(offer))
    peer.send(offer=offer)
    answer = peer.wait_for("answer")
    assert answer["remote"] == [], "no .local name resolved"
    assert answer["safe"] is False, "end-of-candidates is unsafe here"
    assert _candidates(answer["answer"]), "the answer carries local candidates"
    page.evaluate("sdp => interop.accept(sdp)", answer["answer"])
    connected = peer.wait_for("connected")["connected"]
    assert connected["selected"][0] == "prflx", connected
    until(lambda: page.evaluate("interop.channelOpen()"), "the browser's channel open")
    page.evaluate("interop.send('via prflx')")
    assert peer.wait_for("message")["message"] == "via prflx"


@pytest.mark.parametrize("setup", ["unresolvable"], indirect=True)
def test_unresolvable_mdns_names_with_unconditional_end_of_candidates_leave_the_answer_empty(
        setup: tuple[Any, Peer]) -> None:
    """The bug the rule avoids (the code before issue 13): ending the candidates anyway prunes the
    component, and the answer has no candidate for the browser to check."""
    page, peer = setup
    peer.send(offer=page.evaluate("interop.offer()"), end="always")
    answer = peer.wait_for("answer")
    assert answer["safe"] is False
    assert not _candidates(answer["answer"]), "aioice pruned the component: no local candidates"


@pytest.mark.parametrize("setup", ["media"], indirect=True)
def test_browser_with_fake_camera_and_mic_and_sdparta_sources_media_both_ways(setup: tuple[Any, Peer]) -> None:
    """Permission granted (fake devices): audio and video from Chromium reach aiortc, and sdparta's tone
    and test pattern reach the page (frames counted by requestVideoFrameCallback, the tone by an analyser)."""
    page, peer = setup
    offer = page.evaluate("interop.offer(true)")
    assert "m=audio" in offer and "m=video" in offer
    peer.send(offer=offer, media=True)
    answer = peer.wait_for("answer")
    assert answer["safe"] and _candidates(answer["answer"])
    page.evaluate("sdp => interop.accept(sdp)", answer["answer"])
    peer.wait_for("connected")

    def frames() -> bool:
        peer.seen = [e for e in peer.seen if "frames" not in e]
        got = peer.wait_for("frames")["frames"]
        return got["audio"] >= 25 and got["video"] >= 10

    until(frames, "the browser's audio and video at aiortc")
    until(lambda: page.evaluate("interop.state.videoFrames") >= 10, "sdparta's test pattern in the page")
    until(lambda: page.evaluate("interop.state.audioPeak") > 0.05, "sdparta's tone in the page")
