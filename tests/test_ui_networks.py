"""The networks that carry the room, as the app tells them (issue 12): the status bar at 80×24 and
120×40, the ICE panel's networks section, one toast per change, the invite line with relays and
what the lobby says when no relay answers. Frozen snapshots, no network; every wait is a condition."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from rich.text import Text
from textual.widgets import Static

from sdparta.engine.state import CallSnapshot, StateChange
from sdparta.room.rendezvous import NetworkState
from sdparta.ui.app import SdpartaApp
from sdparta.ui.lobby import invite_command, invite_lines, lobby_text, roster_hint, web_invite_lines, web_link
from sdparta.ui.networks import NetworkNews, last_delivery, network_summary, networks_text
from sdparta.ui.status_bar import STATUS_HINTS, status_text
from support.frozen_call import FrozenCall, frozen_snapshot
from support.waits import wait_until

HINT = STATUS_HINTS[-1]
PORTAL = NetworkState("portal", "http://127.0.0.1:8787", "push", 5, 40)
A = NetworkState("relay", "ws://127.0.0.1:7001/", "open", 12, 30)
B = NetworkState("relay", "ws://127.0.0.1:7002/", "open", 11, 29)
C = NetworkState("relay", "ws://127.0.0.1:7003/", "open", 10, 28)
BLOCKED = "refused: blocked: kind 30078 is not allowed here"
PUBLIC = (NetworkState("relay", "wss://nos.lol/", "open", 3, 7), NetworkState("relay", "wss://nostr.mom/", "open"),
          NetworkState("relay", "wss://offchain.pub/", "open"))


def relays_only(*networks: NetworkState, public: bool = False, **changes: object) -> CallSnapshot:
    return replace(frozen_snapshot(), portals=(), relays=tuple(n.url for n in networks), networks=networks,
                   public_relays=public, **changes)  # type: ignore[arg-type]


def with_portal(*relays: NetworkState, **changes: object) -> CallSnapshot:
    return replace(frozen_snapshot(), relays=tuple(n.url for n in relays), networks=(PORTAL, *relays),
                   **changes)  # type: ignore[arg-type]


def refused(network: NetworkState, state: str = BLOCKED) -> NetworkState:
    return replace(network, state=state, sent=4, received=0, rejected=2, reasons=(("blocked", 2),))


def make_app(snapshot: CallSnapshot) -> tuple[SdpartaApp, FrozenCall]:
    call = FrozenCall(snapshot)
    app = SdpartaApp(call, video_mode="256", fps=10, small_tiles=False, local_time=time.gmtime)  # type: ignore[arg-type]
    return app, call


def rendered(app: SdpartaApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


# ------------------------------------------------------------------ status bar
STATUS_CASES = [  # snapshot, what 120 columns show, what 80 columns show
    (relays_only(*PUBLIC, public=True), "nos.lol +2 public relays", "public relays"),
    (relays_only(A, B, C), "127.0.0.1:7001 +2 relays", "3 relays"),
    (relays_only(A), "relay 127.0.0.1:7001", "1 relay"),
    (relays_only(A, B, refused(C)), "2/3 relays, 1 refused", "2/3 relays"),
    (relays_only(*PUBLIC[:2], refused(PUBLIC[2]), public=True), "2/3 public relays, 1 refused", "2/3 relays"),
    (relays_only(replace(A, state="dead: connection refused")), "relay 127.0.0.1:7001 dead", "relay dead"),
    (with_portal(A, B), "portal 127.0.0.1:8787 push + 2 relays", "push + 2 relays"),
    (with_portal(A, replace(B, state="backing-off: timeout")), "portal 127.0.0.1:8787 push + 1/2 relays, 1 down",
     "push + 1/2 relays"),
    (frozen_snapshot(), "127.0.0.1:8787 push", "push"),  # a portal-only room reads as it always did
]


@pytest.mark.parametrize(("snap", "wide", "narrow"), STATUS_CASES)
def test_the_status_bar_names_the_networks_then_counts_them(snap: CallSnapshot, wide: str, narrow: str) -> None:
    assert f" {wide} " in status_text(snap, 120).plain
    small = status_text(snap, 80).plain
    assert f" {narrow} " in small and small.rstrip().endswith(HINT), small
    for width in (30, 40, 60, 100, 200):
        bar = status_text(snap, width, unread=3)
        assert bar.cell_len <= width and bar.plain.rstrip().endswith(HINT), (width, bar.plain)


def test_a_network_down_is_yellow_and_none_up_is_red() -> None:
    assert network_summary(relays_only(A, B))[2] == ""
    assert network_summary(relays_only(A, refused(B)))[2] == "yellow"
    assert network_summary(relays_only(refused(A), replace(B, state="dead")))[2] == "bold red"
    assert network_summary(relays_only(replace(A, state="connecting"), B))[2] == "", "connecting is not down"
    bar = status_text(relays_only(refused(A), replace(B, state="dead")), 120)
    assert any(span.style == "bold red" and "0/2 relays" in bar.plain[span.start:span.end] for span in bar.spans)


def test_before_the_engine_reports_states_the_configured_networks_are_named() -> None:
    snap = replace(frozen_snapshot(), portals=(), relays=("wss://relay.example/",), networks=())
    assert " relay relay.example " in status_text(snap, 120).plain
    assert "state not known yet" in networks_text(snap, None).plain


@pytest.mark.parametrize(("size", "index"), [((80, 24), 2), ((120, 40), 1)])
async def test_the_status_bar_in_the_app(size: tuple[int, int], index: int) -> None:
    snap, wide, narrow = STATUS_CASES[3]
    app, _ = make_app(snap)
    expected = (snap, wide, narrow)[index]
    async with app.run_test(size=size):
        await wait_until(lambda: f" {expected} " in rendered(app, "#status"), f"{expected!r} in the status bar",
                         timeout=30)
        assert rendered(app, "#status").rstrip().endswith(HINT)


# ------------------------------------------------------------------ ICE panel
def delivered(snap: CallSnapshot, via: str) -> CallSnapshot:
    peer = snap.peers[0]
    timeline = (*peer.timeline, StateChange(0.25, "peer", f"answer gen 1 received via {via}"),
                StateChange(0.4, "peer", "restart offer gen 2 via data channel"))
    return replace(snap, peers=(replace(peer, timeline=timeline), *snap.peers[1:]))


def test_the_networks_section_lists_states_counters_and_who_delivered() -> None:
    snap = delivered(with_portal(A, refused(B)), A.url)
    text = networks_text(snap, snap.peers[0])
    plain = text.plain
    assert f"relay  {B.url}  {BLOCKED}" in plain
    assert "events sent 4 · received 0 · rejected 2 (blocked ×2)" in plain
    assert "events sent 12 · received 30 · rejected 0" in plain
    assert "portal http://127.0.0.1:8787  push" in plain and "registry writes 5 · reads 40" in plain
    assert f"last signalling from bot1: answer gen 1 via {A.url} at 0.250 s" in plain
    refusal = plain.index(BLOCKED)
    assert any(span.style == "bold red" and span.start <= refusal < span.end for span in text.spans)
    assert last_delivery(frozen_snapshot().peers[0]) is None
    assert "none carried by a network yet" in networks_text(frozen_snapshot(), frozen_snapshot().peers[0]).plain


def test_public_relays_are_said_with_how_to_replace_them() -> None:
    plain = networks_text(relays_only(*PUBLIC, public=True), None).plain
    assert "public relays, chosen for this room" in plain and "--relay URL" in plain and "relays = [...]" in plain
    assert "public relays" not in networks_text(relays_only(A), None).plain


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_ice_panel_shows_the_networks(size: tuple[int, int]) -> None:
    snap = delivered(with_portal(A, refused(B)), A.url)
    app, call = make_app(snap)
    async with app.run_test(size=size) as pilot:
        await wait_until(lambda: len(app._tiles) == 3, "the tiles", timeout=30)
        await pilot.press("i")
        await wait_until(lambda: BLOCKED in rendered(app, "#ice-networks"), "the refusal in the panel", timeout=30)
        shown = rendered(app, "#ice-networks")
        assert "rejected 2 (blocked ×2)" in shown and f"via {A.url}" in shown
        # counters follow the snapshots while the panel is open
        call.publish(replace(snap, networks=(PORTAL, replace(A, received=31), refused(B))))
        await wait_until(lambda: "received 31" in rendered(app, "#ice-networks"), "the counter updated", timeout=30)
        await pilot.press("n")  # the next participant never had a message through a network
        await wait_until(lambda: "last signalling from bot2: none" in rendered(app, "#ice-networks"),
                         "the focused participant's line", timeout=30)


async def test_the_panel_shows_the_networks_while_alone() -> None:
    app, _ = make_app(relays_only(*PUBLIC, public=True, peers=(), alone_since=time.time()))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("i")
        await wait_until(lambda: "wss://nostr.mom/" in rendered(app, "#ice-networks"), "the relays listed",
                         timeout=30)


# ------------------------------------------------------------------ notices
def test_network_news_tells_each_change_once() -> None:
    news = NetworkNews()
    assert news.news(relays_only(A, B)) == []
    first = news.news(relays_only(A, refused(B)))
    assert len(first) == 1 and first[0][0] == "warning"
    assert B.url in first[0][1] and "blocked: kind 30078" in first[0][1] and "--relay URL" in first[0][1]
    assert news.news(relays_only(replace(A, sent=99), refused(B))) == [], "counters alone change nothing"
    pow_ = refused(B, "refused: pow: difficulty 20")
    assert len(news.news(relays_only(A, pow_))) == 1, "a new reason is told"
    down = news.news(relays_only(replace(A, state="dead: timeout"), pow_))
    assert [severity for severity, _ in down] == ["error"] and "no network carries the room" in down[0][1]
    assert news.news(relays_only(replace(A, state="backing-off: timeout"), pow_)) == [], "still down"
    back = news.news(relays_only(A, pow_))
    assert [severity for severity, _ in back] == ["information"] and A.url in back[0][1]


def test_failing_to_join_is_not_told_twice() -> None:
    """Every network down before any answered: the engine's own join error says so already."""
    news = NetworkNews()
    assert news.news(relays_only(replace(A, state="dead"), replace(B, state="backing-off: timeout"))) == []
    assert news.news(relays_only(A, replace(B, state="connecting"))) == []


async def test_the_app_toasts_a_refusal_once() -> None:
    ok = relays_only(A, B, C)
    app, call = make_app(ok)

    def toasts(text: str) -> int:
        return sum(text in n.message for n in app._notifications)

    async with app.run_test(size=(120, 40), notifications=True):
        await wait_until(lambda: app.snapshot_state is ok, "the first snapshot rendered", timeout=30)
        bad = relays_only(A, B, refused(C))
        call.publish(bad)
        await wait_until(lambda: toasts("refuses us") == 1, "one toast for the refusal", timeout=30)
        assert any(C.url in n.message and n.severity == "warning" for n in app._notifications)
        for sent in range(5):  # snapshots keep coming (counters): no toast more
            again = relays_only(replace(A, sent=sent), B, refused(C))
            call.publish(again)
            await wait_until(lambda snap=again: app.snapshot_state is snap, "the snapshot rendered", timeout=30)  # type: ignore[misc]
        assert toasts("refuses us") == 1
        gone = relays_only(replace(A, state="dead"), replace(B, state="dead"), refused(C))
        call.publish(gone)
        await wait_until(lambda: toasts("no network carries the room") == 1, "the outage told", timeout=30)
        await wait_until(lambda: "0/3 relays" in rendered(app, "#status"), "the count in the status bar", timeout=30)


# ------------------------------------------------------------------ lobby and invite
def alone(snap: CallSnapshot, seconds: float = 3, **changes: object) -> CallSnapshot:
    return replace(snap, peers=(), room="team sync", alone_since=time.time() - seconds, portal_reachable=True,
                   **changes)  # type: ignore[arg-type]


def test_the_invite_line_names_the_relays() -> None:
    snap = alone(with_portal(A, B), password_set=True)
    assert invite_command(snap) == ("sdparta join 'team sync' --portal http://127.0.0.1:8787 "
                                    f"--relay {A.url} --relay {B.url} --password '…'")
    assert invite_command(alone(relays_only(A))) == f"sdparta join 'team sync' --relay {A.url}"
    narrow = invite_lines(snap, 40)
    assert narrow[1:4] == ["  --portal http://127.0.0.1:8787 \\", f"  --relay {A.url} \\", f"  --relay {B.url} \\"]


def test_public_relays_are_not_named_in_the_invite_but_said() -> None:
    snap = alone(relays_only(*PUBLIC, public=True))
    assert invite_command(snap) == "sdparta join 'team sync'"
    lobby = lobby_text(snap, time.time(), 120).plain
    assert "(public relays: nos.lol, nostr.mom, offchain.pub" in lobby and "no portal or relay of their own" in lobby
    later = lobby_text(alone(relays_only(*PUBLIC, public=True), 30), time.time(), 120).plain
    assert "same public relays" in later


def test_the_page_link_names_the_calls_stun_servers() -> None:
    """The page uses the STUN servers the call uses: none (a call on its own portal) is an empty ``ice=``
    (else the page would ask its default, a public one), named ones one ``ice`` each; the public default
    is the page's too and is left out; no list known: no field."""
    portal = "http://127.0.0.1:8787"
    assert web_link("r", portal, stun=()) == f"{portal}/web/#room=r&ice="
    assert web_link("r", portal, stun=["stun:10.0.0.1:3478", "stuns:h"]) == (
        f"{portal}/web/#room=r&ice=stun%3A10.0.0.1%3A3478&ice=stuns%3Ah")
    assert web_link("r", portal, stun=["stun:stun.l.google.com:19302"]) == f"{portal}/web/#room=r"
    assert web_link("r", portal) == f"{portal}/web/#room=r"
    snap = alone(with_portal(A), stun=("stun:10.0.0.1:3478",))
    assert web_invite_lines(snap)[0].endswith("&ice=stun%3A10.0.0.1%3A3478"), web_invite_lines(snap)
    assert web_invite_lines(alone(with_portal(A)))[0].endswith("&ice="), "no STUN in the call: none in the page"
    # the portal sdparta join found serving the page, else the first; none serving it: why, no link
    other = "http://10.0.0.9:8787"
    assert web_invite_lines(snap, page_portal=other)[0].startswith(f"{other}/web/#room=team%20sync")
    assert web_invite_lines(snap, no_page="no browser page: its portal does not serve it") == [
        "(no browser page: its portal does not serve it)"]
    # the terminal's invite names them as well, unless they are what the invitee's defaults give
    assert invite_command(snap) == (f"sdparta join 'team sync' --portal http://127.0.0.1:8787 --relay {A.url} "
                                    "--stun stun:10.0.0.1:3478")
    public = alone(relays_only(*PUBLIC, public=True), stun=("stun:stun.l.google.com:19302",))
    assert invite_command(public) == "sdparta join 'team sync'"


async def test_the_lobby_invites_with_the_relays() -> None:
    app, _ = make_app(alone(with_portal(A, B), password_set=True))
    async with app.run_test(size=(120, 40)):
        await wait_until(lambda: f"--relay {B.url}" in rendered(app, "#lobby"), "the invite with relays", timeout=30)


def unreachable(snap: CallSnapshot, error: str) -> CallSnapshot:
    return replace(snap, peers=(), status="error", portal_reachable=False, alone_since=None, error=error)


def test_no_relay_answering_is_said_with_each_state() -> None:
    snap = unreachable(relays_only(replace(A, state="dead: connection refused"), refused(B)),
                       "no relay answers (2 tried)")
    lobby = lobby_text(snap, time.time(), 200).plain
    assert f"no relay answers: {A.url} (dead: connection refused), {B.url} ({BLOCKED}) — retrying" in lobby
    assert "--relay URL" in lobby and "portal" not in lobby.split("\n", 1)[0]
    assert roster_hint(snap, time.time()) == "no relay answering — retrying"
    both = unreachable(with_portal(replace(A, state="dead")), "unreachable")
    assert lobby_text(both, time.time(), 200).plain.startswith("no portal or relay answers: http://127.0.0.1:8787")
    portal_only = unreachable(frozen_snapshot(), "portal http://127.0.0.1:8787 is unreachable")
    assert "portal http://127.0.0.1:8787 not answering — retrying" in lobby_text(portal_only, time.time(), 200).plain


async def test_the_app_says_no_relay_answers() -> None:
    snap = unreachable(relays_only(replace(A, state="dead: connection refused")), "no relay answers")
    app, _ = make_app(snap)
    async with app.run_test(size=(80, 24)):
        await wait_until(lambda: "no relay answers" in rendered(app, "#lobby"), "the lobby", timeout=30)
        assert "no relay answering" in rendered(app, "#participants") and "waiting" not in rendered(app, "#lobby")
        assert "relay dead" in rendered(app, "#status")


def test_text_from_relays_cannot_reach_the_terminal() -> None:
    hostile = replace(A, url="ws://evil\x1b[2J/", state="refused: blocked: \x1b]0;owned\x07",
                      reasons=(("\x1b[31mred", 1),))
    for text in (networks_text(relays_only(hostile), None), status_text(relays_only(hostile), 200),
                 lobby_text(unreachable(relays_only(hostile), "x"), time.time(), 200)):
        assert isinstance(text, Text) and "\x1b" not in text.plain and "\x07" not in text.plain
    assert all("\x1b" not in t for _, t in NetworkNews().news(relays_only(hostile)))
