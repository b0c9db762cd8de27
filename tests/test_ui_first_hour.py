"""What a new user tripped over in the first hour (issue 9), driven through the app with Pilot at
80×24, 120×40 and 200×60 against frozen snapshots: no network, and every wait is a condition."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from textual import events
from textual.widgets import Input, RichLog, Static
from textual.widgets._toast import Toast

from sdparta.engine.state import CallSnapshot, CandidateInfo, CandidatePairInfo, ChatMessage, PeerStats
from sdparta.ui.app import SdpartaApp
from sdparta.ui.ice_panel import IcePanel, ice_head_text, ice_panel_text
from sdparta.ui.layout import choose_layout
from sdparta.ui.lobby import ALONE_HINT_AFTER_S, invite_command, invite_lines, lobby_text
from sdparta.ui.status_bar import STATUS_HINTS, status_text
from support.frozen_call import FrozenCall, frozen_snapshot
from support.waits import wait_until

SIZES = [(80, 24), (120, 40), (200, 60)]
HINT = STATUS_HINTS[-1]  # "? help · ^q quit": the only on-screen help, never dropped


def make_app(snapshot: CallSnapshot | None = None, **kwargs: object) -> tuple[SdpartaApp, FrozenCall]:
    call = FrozenCall(snapshot)
    options: dict[str, object] = {"video_mode": "256", "fps": 10, "small_tiles": False, "local_time": time.gmtime,
                                  **kwargs}
    return SdpartaApp(call, **options), call  # type: ignore[arg-type]


def rendered(app: SdpartaApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def plain(renderable: object, width: int = 200) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def logged(app: SdpartaApp, text: str) -> bool:
    return any(text in line.text for line in app.query_one("#chat-log", RichLog).lines)


async def tiles_ready(app: SdpartaApp) -> None:
    await wait_until(lambda: len(app._tiles) == 3 and all(t.region.width > 0 for t in app._tiles.values()),
                     "the three live participants' tiles laid out", timeout=30)


# ------------------------------------------------------------------ status bar
@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
def test_the_status_bar_always_keeps_help_and_quit(width: int) -> None:
    snap = frozen_snapshot()
    for variant in (snap, replace(snap, room="x" * 5000), replace(snap, status="error", room="r" * 40),
                    replace(snap, portals=("https://" + "p" * 200 + ".example",) * 3)):
        for unread in (0, 12):
            bar = status_text(variant, width, unread)
            assert bar.cell_len <= width and bar.plain.rstrip().endswith(HINT), (width, bar.plain)


def test_a_long_room_name_is_shortened_with_an_ellipsis() -> None:
    bar = status_text(replace(frozen_snapshot(), room="z" * 5000), 120).plain
    assert "…" in bar and bar.count("z") <= 24 and "mic on" in bar and bar.rstrip().endswith(HINT)


@pytest.mark.parametrize(("mic", "source", "label"), [
    ("on", "tone:440", "tone 440 Hz on"), ("muted", "tone:440", "tone 440 Hz muted"),
    ("on", "tone:261.63", "tone 261.63 Hz on"), ("on", "mic", "mic on"), ("muted", "mic", "mic muted"),
    ("missing", "mic", "no mic"), ("off", "none", "no mic")])
def test_the_status_bar_names_the_real_audio_source(mic: str, source: str, label: str) -> None:
    bar = status_text(replace(frozen_snapshot(), mic=mic, mic_source=source), 160).plain
    assert f" {label} " in bar
    if source.startswith("tone"):
        assert "mic on" not in bar


# ------------------------------------------------------------------ small and large terminals
def test_layout_per_terminal_size() -> None:
    small, medium, large = (choose_layout(w, h) for w, h in SIZES)
    assert not small.self_view and small.ice_full and small.short
    assert medium.self_view and medium.ice_full and not medium.short
    assert large.self_view and not large.ice_full


@pytest.mark.parametrize(("width", "height"), [*SIZES, (100, 30)])
async def test_every_size_keeps_hints_whole_tiles_and_an_uncut_self_view(width: int, height: int) -> None:
    app, _ = make_app()
    async with app.run_test(size=(width, height)) as pilot:
        await tiles_ready(app)
        await pilot.pause()
        assert rendered(app, "#status").rstrip().endswith(HINT)
        for tile in app._tiles.values():  # no tile squeezed to broken borders
            assert tile.region.width >= 16 and tile.region.height >= 5, tile.region
        side = app.query_one("#side").region
        if not choose_layout(width, height).self_view:
            assert not app.self_tile.display or app.self_tile.region.height == 0, "no self view below 100 columns"
            you = rendered(app, "#you")
            assert "feed:beef:cafe:f00d" in you, "without a self view our key is still on screen"
        else:
            self_view = app.self_tile.region
            assert self_view.height > 0 and self_view.bottom <= side.bottom, "the self view's bottom is cut"
            assert all(t.region.width >= self_view.width for t in app._tiles.values()), \
                "remote tiles are no smaller than the self view"


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_the_ice_panel_takes_the_screen_when_space_is_short(width: int, height: int) -> None:
    app, _ = make_app()
    async with app.run_test(size=(width, height)) as pilot:
        await tiles_ready(app)
        await pilot.press("i")
        panel = app.query_one("#ice", IcePanel)
        await wait_until(lambda: panel.region.width > 0, "the ICE panel laid out", timeout=30)
        if choose_layout(width, height).ice_full:
            await wait_until(lambda: panel.region.width == width, "the panel as wide as the screen", timeout=30)
            assert panel.region.height == height - 1, "all but the status bar"
            assert app.query_one("#grid").region.width == 0 and app.query_one("#chat").region.height == 0
        else:
            assert 64 <= panel.region.width < width // 2 + 1
            assert all(t.region.width >= 16 for t in app._tiles.values()), "tiles beside it stay whole"
        assert rendered(app, "#status").rstrip().endswith(HINT)
        await pilot.press("i")
        await wait_until(lambda: app.query_one("#grid").region.width > 0, "tiles back after i", timeout=30)


# ------------------------------------------------------------------ ICE panel
def two_pairs_snapshot(mark_selected: bool = True) -> CallSnapshot:
    """A pair on IPv4 and one on IPv6, both nominated and succeeded (the remote nominated both);
    media flows on the IPv6 one."""
    snap = frozen_snapshot()

    def cand(address: str, port: int) -> CandidateInfo:
        return CandidateInfo("1", 1, "udp", "host", address, port, 2130706431)

    v4 = CandidatePairInfo(cand("192.0.2.2", 57306), cand("192.0.2.2", 44395), "succeeded", True)
    v6 = CandidatePairInfo(cand("fd00::2", 38827), cand("fd00::2", 40370), "succeeded", True, selected=mark_selected)
    stats = PeerStats(t=30.0, rtt_ms=2.9, bitrate_in_kbps=125, bitrate_out_kbps=52, packets_received=4519,
                      packets_lost=0, loss_fraction=0.0)
    peer = replace(snap.peers[0], check_list=(v4, v6), selected_pair=replace(v6, selected=True), stats=stats)
    return replace(snap, peers=(peer, *snap.peers[1:]))


@pytest.mark.parametrize("mark_selected", [True, False])
def test_exactly_one_pair_is_starred_the_selected_one(mark_selected: bool) -> None:
    peer = two_pairs_snapshot(mark_selected).peers[0]
    pair_lines = [line for line in ice_panel_text(peer).plain.splitlines() if "succeeded" in line]
    assert len(pair_lines) == 2
    starred = [line for line in pair_lines if line.lstrip().startswith("★")]
    assert len(starred) == 1 and "fd00::2:38827" in starred[0], pair_lines


def test_every_figure_has_its_unit() -> None:
    peer = two_pairs_snapshot().peers[0]
    head = ice_head_text(peer).plain
    assert "loss 0.0% (0 of 4519 packets)" in head
    assert "rtt 2.9 ms" in head and "in 125 kbit/s" in head and "out 52 kbit/s" in head
    assert "connected after 0.31 s" in head
    timelines = ice_panel_text(peer).plain
    assert "0.310 s connected" in timelines


def many_candidates_snapshot() -> CallSnapshot:
    """Six candidates a side and ten pairs (a dual-stack host with STUN): more than a screen."""
    snap = two_pairs_snapshot()
    cands = tuple(CandidateInfo(str(i), 1, "udp", ("host", "srflx")[i % 2], f"192.0.2.{i}", 5000 + i, 100 - i)
                  for i in range(6))
    pairs = tuple(CandidatePairInfo(cands[i % 6], cands[(i + 1) % 6], "failed", False) for i in range(8))
    peer = replace(snap.peers[0], local_candidates=cands, remote_candidates=cands,
                   check_list=(*snap.peers[0].check_list, *pairs))
    return replace(snap, peers=(peer, *snap.peers[1:]))


async def test_the_ice_panel_scrolls_by_keys_and_mouse_at_120x40() -> None:
    app, _ = make_app(many_candidates_snapshot())
    async with app.run_test(size=(120, 40)) as pilot:
        await tiles_ready(app)
        await pilot.press("i")
        panel = app.query_one("#ice", IcePanel)
        await wait_until(lambda: panel.max_scroll_y > 0 and panel.region.width > 0,
                         "the panel laid out, taller than the screen", timeout=30)
        # the live figures come first: every sparkline label is in sight without scrolling
        for name in ("rtt", "bitrate", "loss"):
            label = app.query_one(f"#label-{name}").region
            assert panel.region.y <= label.y < panel.region.bottom, name
        assert "kbit/s" in rendered(app, "#label-bitrate") and "% of packets" in rendered(app, "#label-loss")
        more = app.query_one("#ice-more")
        await wait_until(lambda: more.display and "PgDn" in rendered(app, "#ice-more"),
                         "the footer saying there is more below", timeout=30)

        await pilot.press("pagedown")
        await wait_until(lambda: panel.scroll_y > 0, "PgDn scrolled", timeout=30)
        await pilot.press("end")
        await wait_until(lambda: panel.scroll_y == panel.max_scroll_y, "End at the bottom", timeout=30)
        await wait_until(lambda: "PgUp" in rendered(app, "#ice-more"), "the footer at the bottom", timeout=30)
        await pilot.press("home")
        await wait_until(lambda: panel.scroll_y == 0, "Home at the top", timeout=30)
        await pilot.press("down")
        await wait_until(lambda: panel.scroll_y == 1, "Down by one line", timeout=30)
        await pilot.press("up")
        await wait_until(lambda: panel.scroll_y == 0, "Up by one line", timeout=30)
        await pilot._post_mouse_events([events.MouseScrollDown], widget="#ice-text")
        await wait_until(lambda: panel.scroll_y > 0, "the mouse wheel scrolled", timeout=30)
        await pilot.press("pageup", "pageup", "pageup")
        await wait_until(lambda: panel.scroll_y == 0, "PgUp back at the top", timeout=30)


async def test_scroll_keys_do_nothing_while_the_panel_is_closed() -> None:
    app, call = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await tiles_ready(app)
        await pilot.press("pagedown", "down", "end")
        assert app.query_one("#ice", IcePanel).scroll_y == 0 and call.commands == []


# ------------------------------------------------------------------ chat
async def test_sending_hands_the_keys_back_and_the_placeholder_says_so() -> None:
    app, call = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.query_one("#chat-input", Input)
        assert app.focused is None and chat.placeholder == "press c to chat"
        await pilot.press("c")
        await wait_until(lambda: app.focused is chat, "the input focused", timeout=30)
        assert "Enter sends" in chat.placeholder and "Esc leaves" in chat.placeholder
        await pilot.press(*"first", "enter")
        await wait_until(lambda: app.focused is None, "the keys back to the call after Enter", timeout=30)
        assert chat.placeholder == "press c to chat"
        await pilot.press("c", *"second", "enter")  # the c opens the chat again, it is not typed in
        await pilot.press("c", *"third", "escape")
        await wait_until(lambda: app.focused is None, "Esc left the input", timeout=30)
        assert call.commands == [("chat", "first"), ("chat", "second")]
        assert chat.value == "third", "Esc keeps what was typed for later"


async def test_incoming_chat_out_of_sight_is_a_toast_and_an_unread_count(tmp_path: Path) -> None:
    app, call = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await tiles_ready(app)
        start = len(app._notifications)
        first = call.snapshot()
        call.publish(replace(first, chat=(*first.chat, ChatMessage(100.0, "bot2", "2a1b", "can you hear me?"))))
        await wait_until(lambda: logged(app, "can you hear me?"), "the line in the log", timeout=30)
        assert len(app._notifications) == start, "the log is in sight: no toast"
        assert "unread" not in rendered(app, "#status")

        await pilot.press("i")  # 80×24: the ICE panel covers the chat
        await wait_until(lambda: not app.chat_visible(), "the chat out of sight", timeout=30)
        snap = call.snapshot()
        call.publish(replace(snap, chat=(*snap.chat, ChatMessage(101.0, "bot1", "1a1b", "hello?"),
                                         ChatMessage(102.0, "bot1", "1a1b", "anyone there?"))))
        await wait_until(lambda: any(n.message == "bot1: anyone there? (+1 more)" for n in app._notifications),
                         "a toast with sender and text", timeout=30)
        await wait_until(lambda: "✉ 2 unread" in rendered(app, "#status"), "the unread count", timeout=30)
        assert rendered(app, "#status").rstrip().endswith(HINT)
        own = call.snapshot()
        call.publish(replace(own, chat=(*own.chat, ChatMessage(103.0, "me", "feed", "mine", own=True))))
        await wait_until(lambda: logged(app, "mine"), "our line in the log", timeout=30)
        assert "✉ 2 unread" in rendered(app, "#status"), "our own lines are not unread"

        await pilot.press("c")  # c closes the full-screen panel and opens the chat
        await wait_until(lambda: app.chat_visible() and isinstance(app.focused, Input), "the chat in sight",
                         timeout=30)
        await wait_until(lambda: "unread" not in rendered(app, "#status"), "the count cleared", timeout=30)


async def test_chat_under_the_help_screen_is_unread_until_it_closes() -> None:
    app, call = make_app()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await tiles_ready(app)
        await pilot.press("question_mark")
        snap = call.snapshot()
        call.publish(replace(snap, chat=(*snap.chat, ChatMessage(100.0, "bot2", "2a1b", "psst"))))
        await wait_until(lambda: any(n.message == "bot2: psst" for n in app._notifications), "a toast", timeout=30)
        await pilot.press("escape")
        await wait_until(lambda: "unread" not in rendered(app, "#status"), "seen once the help closed", timeout=30)


# ------------------------------------------------------------------ dump
async def test_dump_goes_to_the_state_dir_and_the_toast_keeps_the_path_on_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    app, _ = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await tiles_ready(app)
        await pilot.press("d")
        state = tmp_path / ".local" / "state" / "sdparta"
        dumps = list(state.glob("*.json"))
        assert len(dumps) == 1, "written into the user's state dir, created on demand"
        assert not list(work.iterdir()), "nothing in the current directory"
        assert json.loads(dumps[0].read_text())["peer"]["name"] == "bot1"
        shown = f"~/.local/state/sdparta/{dumps[0].name}"
        toast = next(n for n in app._notifications if n.message == shown)
        assert "written to" in toast.title
        await wait_until(lambda: any(shown in str(t.render()) for t in app.screen.query(Toast)), "the toast drawn",
                         timeout=30)
        widget = next(t for t in app.screen.query(Toast) if shown in str(t.render()))
        await wait_until(lambda: widget.region.width > 0, "the toast laid out", timeout=30)
        inner = widget.region.width - widget.styles.gutter.width
        assert inner >= len(shown), f"the path ({len(shown)} cells) would wrap in {inner} cells"


# ------------------------------------------------------------------ alone or unreachable
def alone_snapshot(seconds: float, **changes: object) -> CallSnapshot:
    return replace(frozen_snapshot(), peers=(), room="team sync", alone_since=time.time() - seconds,
                   portal_reachable=True, **changes)  # type: ignore[arg-type]


def test_the_invite_line_comes_from_the_call() -> None:
    snap = alone_snapshot(0, portals=("http://127.0.0.1:8787", "https://p.example.org"), password_set=True)
    assert invite_command(snap) == ("sdparta join 'team sync' --portal http://127.0.0.1:8787 "
                                    "--portal https://p.example.org --password '…'")
    assert invite_command(replace(snap, room="plain", password_set=False, portals=("http://h:1",))) == \
        "sdparta join plain --portal http://h:1"
    assert invite_command(replace(snap, room="it's")) .startswith("sdparta join 'it'\"'\"'s' ")
    narrow = invite_lines(snap, 40)
    assert [line.endswith(" \\") for line in narrow] == [True, True, True, False], narrow
    assert all(len(line) <= 42 for line in narrow)


async def test_alone_after_20_s_says_what_to_check_and_how_to_invite() -> None:
    app, call = make_app(alone_snapshot(3, password_set=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: "waiting for others" in rendered(app, "#lobby"), "the lobby", timeout=30)
        lobby = rendered(app, "#lobby")
        assert "sdparta join 'team sync' --portal http://127.0.0.1:8787 --password '…'" in lobby
        assert "same room name" not in lobby, "not before 20 s"
        call.publish(alone_snapshot(ALONE_HINT_AFTER_S + 5, password_set=True))
        await wait_until(lambda: "same room name" in rendered(app, "#lobby"), "the hint after 20 s", timeout=30)
        lobby = rendered(app, "#lobby")
        assert "password" in lobby and "portal" in lobby and "--password '…'" in lobby
        assert "waiting for others" not in rendered(app, "#participants")
        await pilot.resize_terminal(80, 24)
        await wait_until(lambda: " \\" in rendered(app, "#lobby"), "the invite continued, not wrapped", timeout=30)


async def test_an_unreachable_portal_is_said_instead_of_waiting() -> None:
    snap = replace(frozen_snapshot(), peers=(), status="error", portal_reachable=False, alone_since=None,
                   error="portal http://127.0.0.1:9 is unreachable (ConnectError)", portals=("http://127.0.0.1:9",))
    app, _ = make_app(snap)
    async with app.run_test(size=(80, 24)):
        await wait_until(lambda: "not answering" in rendered(app, "#lobby"), "the portal named", timeout=30)
        assert "portal http://127.0.0.1:9 not answering — retrying" in plain(lobby_text(snap, time.time(), 200))
        assert "waiting" not in rendered(app, "#participants") and "waiting" not in rendered(app, "#lobby")
        assert "not answering" in rendered(app, "#participants")


# ------------------------------------------------------------------ ctrl+c
async def test_ctrl_c_says_how_to_leave() -> None:
    app, call = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("ctrl+c")
        await wait_until(lambda: any("ctrl+q" in n.message for n in app._notifications), "the reminder",
                         timeout=30)
        assert not call.stopped and app.is_running
