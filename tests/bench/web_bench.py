"""`just bench` figures for the browser page (issue 13), written into a section of their own.

Setup (as tests/test_web_call.py): Debian's Chromium driven by playwright (``executable_path``, fake
camera and microphone), a real ``sdparta portal`` serving the page, real ``sdparta bot`` processes;
Chromium and the portal in one network namespace, the bots in another, joined by a veth pair with no
route out (tests/support/browser.py CallNamespaces). Root, Chromium and playwright are needed; without
them the figures are "not measured" and ``--write`` keeps the section as it was.

- **Joining a waiting bot.** One bot waits in the room. Then, in turns, ``JOIN_ROUNDS`` times each: a
  fresh page (new browser context: empty storage, a new identity) opens the room's link and taps Join
  → the page's pair with the bot is ``connected`` (the page's own clock: ``joinTapAt`` → the pair's
  ``connectedAt``, which includes PBKDF2); and a fresh bot process joins → its pair with the waiting
  bot is ``connected`` (the bot's own clock: its Call starting → the pair's first ``connected``,
  PBKDF2 included, the process start and imports not). Each joiner leaves before the next one.
- **Page weight.** A cold first load of ``/web/`` (new context, no cache) counted by Chromium's
  DevTools protocol: bytes on the wire (``encodedDataLength``: headers and bodies as transferred,
  the portal's gzip where it serves it) beside the bodies' decoded size, and the requests.
- **Time to interactive.** Cold loads on Playwright's Pixel 7 descriptor (412×839, scale 2.625,
  touch, mobile user agent; no CPU throttling: this machine's CPU, not a phone's) from navigation
  start to the join form usable: the Join button shown and the identity's fingerprint displayed
  (the key made and stored in IndexedDB on a first visit); a desktop viewport in the same run beside it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_tables import Row, put_section

from support.browser import BASE_ARGS, FAKE_MEDIA_ARGS, CallNamespaces, browser_unavailable
from support.procs import BotProcess, peers_seen_by_name, start_bot, start_portal, wait_for

SECTION = "## The browser page"
JOIN_ROUNDS = 10
LOAD_ROUNDS = 5
PASSWORD = "pw-of-the-web-bench"
DEADLINE = 90.0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f} s" if values else "—"


def _page_join(browser: Any, url: str, name: str) -> dict[str, Any]:
    """A fresh page joins: join tap → connected with the waiting bot, in seconds (the page's clock),
    and where the time went (keys derived, joined, the bot discovered; who offered)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.fill("input[name=name]", name)
        page.click("[data-testid=join]")
        page.wait_for_function(
            "() => { const r = globalThis.sdparta && globalThis.sdparta.report();"
            " return r && r.pairs.some(p => p.name === 'waiter' && p.connectedAt !== null); }",
            timeout=DEADLINE * 1000, polling=50)
        report = page.evaluate("globalThis.sdparta.report()")
        pair = next(p for p in report["pairs"] if p["name"] == "waiter")
        page.click("[data-testid=leave]")
        page.wait_for_selector("[data-testid=left]", timeout=DEADLINE * 1000)
        tap = report["joinTapAt"]
        return {"connected": (pair["connectedAt"] - tap) / 1000, "keys": (report["keysAt"] - tap) / 1000,
                "joined": (report["joinedAt"] - tap) / 1000, "discovered": (pair["discoveredAt"] - tap) / 1000,
                "offer": "offers" if pair["weOffer"] else "answers", "prepared": bool(pair.get("preparedOffer")),
                # the pair's timeline: ms since the pair was made (the bot discovered)
                "gathered": (pair["timeline"]["offer-gathered"] / 1000
                             if "offer-gathered" in pair.get("timeline", {}) else None)}
    finally:
        context.close()


def _bot_join(ns: CallNamespaces, workdir: Path, room: str, bot_portal: str, name: str) -> float:
    """A fresh bot joins: its call starting → connected with the waiting bot (the bot's clock)."""
    bot = start_bot(workdir, room, [bot_portal], name, tone=550.0, record=False,
                    extra=["--password", PASSWORD], argv_prefix=ns.peer_prefix())
    try:
        wait_for(lambda: peers_seen_by_name(bot.report()).get("waiter", {}).get("connected_after_s") is not None,
                 DEADLINE, f"{name} connected to the waiting bot")
        return float(peers_seen_by_name(bot.report())["waiter"]["connected_after_s"])
    finally:
        bot.stop()


def _cold_load(browser: Any, url: str, **context_args: Any) -> dict[str, float]:
    """One first load of the page in a new context: wire bytes, decoded body bytes, requests, and
    navigation start → join form usable (ms)."""
    context = browser.new_context(**context_args)
    try:
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        wire: dict[str, float] = {}
        decoded: dict[str, float] = {}
        gzipped: set[str] = set()

        def received(e: dict[str, Any]) -> None:
            headers = {k.lower(): v for k, v in e["response"].get("headers", {}).items()}
            if headers.get("content-encoding") == "gzip":
                gzipped.add(e["requestId"])

        cdp.on("Network.responseReceived", received)
        cdp.on("Network.loadingFinished", lambda e: wire.__setitem__(e["requestId"], e["encodedDataLength"]))
        cdp.on("Network.dataReceived", lambda e: decoded.__setitem__(
            e["requestId"], decoded.get(e["requestId"], 0) + e["dataLength"]))
        page.goto(url)
        ready = page.wait_for_function(
            "() => { const b = document.querySelector('[data-testid=join]');"
            " const fp = document.querySelector('.me code');"
            " return b && fp && fp.textContent.trim() ? performance.now() : null; }",
            timeout=DEADLINE * 1000, polling="raf")
        interactive = float(ready.json_value())
        page.wait_for_load_state("networkidle")
        return {"wire": sum(wire.values()), "decoded": sum(decoded.values()), "requests": len(wire),
                "gzipped": len(gzipped & wire.keys()), "interactive_ms": interactive}
    finally:
        context.close()


def bench_web(runs: int, rows: list[Row], notes: list[str] | None = None, *, join_rounds: int = JOIN_ROUNDS,
              load_rounds: int = LOAD_ROUNDS) -> None:
    """The figures of the module doc; ``runs`` is unused (the issue names 10 joins)."""
    del runs
    if (reason := browser_unavailable()) is not None:
        rows.append(("browser page", "not measured", reason))
        return
    from playwright.sync_api import sync_playwright

    began, load0 = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sdparta-web-bench-") as tmp, \
            CallNamespaces(Path(tmp), subnet="10.208.0") as ns, sync_playwright() as pw:
        workdir = Path(tmp)
        portal = start_portal(workdir / "portal.sqlite3", host="0.0.0.0", argv_prefix=ns.browser_prefix())
        waiter: BotProcess | None = None
        browser = None
        try:
            port = int(portal.url.rsplit(":", 1)[1])
            page_url, bot_portal = f"http://127.0.0.1:{port}/web/", f"http://{ns.browser_ip}:{port}"
            browser = pw.chromium.launch(executable_path=str(ns.wrapper), args=[
                *BASE_ARGS, *FAKE_MEDIA_ARGS, "--autoplay-policy=no-user-gesture-required"])
            room = "web-bench-room"
            waiter = start_bot(workdir, room, [bot_portal], "waiter", tone=440.0, record=False,
                               extra=["--password", PASSWORD], argv_prefix=ns.peer_prefix())
            wait_for(lambda: (waiter.report() or {}).get("status") == "joined", DEADLINE, "the waiting bot joined")
            link = f"{page_url}#room={room}&pw={PASSWORD}&ice="  # ice=: no STUN server (no route to a public one)
            page_runs: list[dict[str, Any]] = []
            bot_s: list[float] = []
            for i in range(join_rounds):  # interleaved, so the machine's load hits both alike
                page_runs.append(_page_join(browser, link, f"page{i}"))
                bot_s.append(_bot_join(ns, workdir, room, bot_portal, f"joiner{i}"))
            waiter.stop()
            waiter = None
            phone = pw.devices["Pixel 7"]
            loads = {"phone": [], "desktop": []}  # type: dict[str, list[dict[str, float]]]
            for _ in range(load_rounds):
                loads["phone"].append(_cold_load(browser, page_url, **phone))
                loads["desktop"].append(_cold_load(browser, page_url, viewport={"width": 1280, "height": 800}))
        finally:
            if waiter is not None:
                waiter.stop()
            if browser is not None:
                browser.close()
            portal.stop()
    page_s = [run["connected"] for run in page_runs]
    rows.append((f"browser joining a waiting bot: join tap → connected (median of {join_rounds})",
                 f"{_median(page_s):.2f} s (range {_spread(page_s)})",
                 f"bot joining the same bot, same run, its call start → connected: {_median(bot_s):.2f} s "
                 f"(range {_spread(bot_s)}) → page {_median(page_s) / _median(bot_s):.1f}×"))
    for role in ("answers", "offers"):  # who offers is the session ids' draw (offersFirst): the two paths differ
        times = [r["connected"] for r in page_runs if r["offer"] == role]
        if times:
            if role == "answers":
                what, why = "answering the bot", "the bot's offer meets a connection the page warmed at discovery"
            else:
                gathered = _median([r["gathered"] for r in page_runs
                                    if r["offer"] == role and r["gathered"] is not None])
                what, why = "offering to the bot", (f"its offer ready (the one prepared at joining, or a fresh one) "
                                                    f"{gathered:.2f} s after it discovered the bot (median)")
            rows.append((f"… of those, the page {what}",
                         f"{_median(times):.2f} s (median of {len(times)}, range {_spread(times)})", why))
    first = loads["phone"]
    wire, decoded = _median([x["wire"] for x in first]), _median([x["decoded"] for x in first])
    rows.append(("page weight, first load of /web/ (bytes on the wire, headers included)",
                 f"{wire / 1024:.0f} KiB in {first[0]['requests']:.0f} requests ({first[0]['gzipped']:.0f} gzipped)",
                 f"decoded bodies {decoded / 1024:.0f} KiB: the portal's gzip → {wire / decoded:.0%} on the wire"))
    tti = _median([x["interactive_ms"] for x in loads["phone"]])
    desk = _median([x["interactive_ms"] for x in loads["desktop"]])
    rows.append((f"time to interactive, Pixel 7 profile, cold load (median of {load_rounds})",
                 f"{tti:.0f} ms (navigation → Join shown with the fingerprint)",
                 f"desktop 1280×800, same run: {desk:.0f} ms (no CPU throttling: this machine's CPU)"))
    if notes is not None:
        steps = [_steps(r) for r in page_runs]
        notes += [f"page joins, join tap → connected (s): {'; '.join(steps)}",
                  f"bot joins, call start → connected (s): {[round(x, 2) for x in bot_s]}",
                  f"took {time.monotonic() - began:.0f} s; load average {load0:.1f} at the start, "
                  f"{os.getloadavg()[0]:.1f} at the end"]


def _steps(run: dict[str, Any]) -> str:
    """One page join, broken down (seconds from the join tap; the offer's readiness from discovery)."""
    offer = f"page {run['offer']}" + (", prepared offer" if run["prepared"] else "")
    if run["gathered"] is not None:
        offer += f", offer ready {run['gathered']:.2f} after discovery"
    return (f"{run['connected']:.2f} (keys {run['keys']:.2f}, joined {run['joined']:.2f}, "
            f"bot discovered {run['discovered']:.2f}, {offer})")


def write_section(path: Path, rows: list[Row], notes: list[str]) -> None:
    """Put the section "The browser page (DATE)" into ``path``."""
    put_section(path, SECTION, "`tests/bench/run.py --only web` on this machine ({cores} cores), {date}: Debian's "
                "Chromium driven by Playwright with fake media, a real portal and real bots in network namespaces "
                "joined by a veth pair (see `tests/bench/web_bench.py` for the method).", rows, notes)
