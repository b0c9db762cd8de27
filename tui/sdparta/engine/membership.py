"""The room's members as pairs: one :class:`Negotiation` per remote session, made, replaced and
ended as the room session reports members (the ``RoomEvents`` a ``Call`` gives its session).

One rule for leavers: a pair that ended because its member left (bye, or taken out of the list) or
is gone (stopped announcing: crashed, lost its network) stays in ``pairs`` — and so in snapshots,
the UI's list and the bot's report — with that status for ``DEPARTED_LINGER_S``, then moves to
``departed``, where it is still remembered (its generations, that it said bye) but no longer shown.
A pair that failed keeps its diagnosis on screen until its member leaves or goes too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from sdparta.engine.diagnosis import turn_servers_of
from sdparta.engine.local_media import LocalMedia
from sdparta.engine.negotiation import Negotiation, PeerContext, offers_first
from sdparta.engine.peer import BYE_REASON, PeerLink
from sdparta.engine.state import PeerStatus
from sdparta.room.events import RoomEvents, SessionCounters
from sdparta.room.keys import fingerprint
from sdparta.room.wire import Member, RoomSettings
from sdparta.sfu.errors import SfuSettingsError
from sdparta.sfu.settings import SfuEntry, parse_sfu_entry

log = logging.getLogger(__name__)

#: A participant who left or is gone is shown so this long (seconds), then leaves the participant list.
DEPARTED_LINGER_S = 12.0
#: Ended pairs remembered after they leave the list (a bye'd session must not come back as a ghost).
DEPARTED_KEPT = 256
#: Why an old pair of a participant who is back with a new session disappears (almost) at once:
#: its participant is still here. Listed this long, so that one snapshot shows how it ended.
REJOINED_REASON = "rejoined with a new session"
REJOINED_LINGER_S = 0.5


class Membership(RoomEvents):
    """The pairs of one call, keyed by remote session id (engine loop only)."""

    def __init__(self, public_key: bytes, session_id: str, started: float, media: LocalMedia, *,
                 ice_servers: list[RTCIceServer], relay_only: bool,
                 notice: Callable[[str, str], None], changed: Callable[[], None]) -> None:
        self.public_key, self.session_id, self.started = public_key, session_id, started
        self.media = media
        self.ice_servers = list(ice_servers)  # + the room's relay, if one is shared
        self._own_turn = bool(turn_servers_of(self.ice_servers))  # then the room's relay is never used
        self.room_turn: tuple[Any, ...] = ()
        self._room_ice: list[RTCIceServer] = []  # the room's TURN relays we use (none: ours, or none shared)
        # The SFU the room's settings name (None: the room is a mesh). Calls do not move onto it yet.
        self.room_sfu: SfuEntry | None = None
        self._rejected_sfu: dict[str, Any] | None = None  # the last invalid entry (told once)
        self.counters = SessionCounters()  # what the engine itself rejected (a room's invalid SFU entry)
        self.relay_only = relay_only
        self.sfu_at = 0  # the call's threshold, for the notice (Call sets it)
        self._notice, self._changed = notice, changed
        self.pairs: dict[str, Negotiation] = {}  # what snapshots show
        self.departed: OrderedDict[str, Negotiation] = OrderedDict()  # ended and off the list
        self._ended_at: dict[str, float] = {}  # session id → when it leaves the list (monotonic)
        self.context: PeerContext | None = None  # set once the room session exists

    def new_pc(self) -> RTCPeerConnection:
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        return RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers), iceTransportPolicy=policy))

    def finish(self, link: PeerLink, status: PeerStatus, reason: str | None) -> None:
        """The pair is over: its status says why, its audio leaves the mix, its connections close.
        A pair that had failed and whose member now leaves or goes takes that status (no ghost)."""
        sid = link.member.session_id
        if status == PeerStatus.LEFT and reason is None:
            reason = BYE_REASON  # the data channel's or the pair slot's bye
        if link.finished:
            if link.status == PeerStatus.FAILED and status in (PeerStatus.LEFT, PeerStatus.GONE):
                link.set_status(status, reason)
                self._ended_at[sid] = time.monotonic() + DEPARTED_LINGER_S
                self._changed()
            return
        link.set_status(status, reason)
        if status != PeerStatus.FAILED:
            self._ended_at[sid] = time.monotonic() + DEPARTED_LINGER_S
        self.media.forget(sid)
        asyncio.get_running_loop().create_task(link.close())
        self._changed()

    def prune(self, now: float) -> None:
        """Take pairs that left or went more than DEPARTED_LINGER_S ago off the list (the engine
        calls this every second); an old pair replaced by its member's new session goes within a
        second (REJOINED_LINGER_S)."""
        for sid, until in list(self._ended_at.items()):
            negotiation = self.pairs.get(sid)
            if negotiation is None:
                del self._ended_at[sid]
                continue
            if now < until:
                continue
            del self._ended_at[sid], self.pairs[sid]
            self.media.video_sinks.pop(sid, None)
            self.departed[sid] = negotiation
            self.departed.move_to_end(sid)
            while len(self.departed) > DEPARTED_KEPT:
                self.departed.popitem(last=False)
            self._changed()

    # ------------------------------------------------------------------ room events
    def member_seen(self, member: Member) -> None:
        sid = member.session_id
        if sid == self.session_id:
            return
        old = self.pairs.get(sid) or self.departed.get(sid)
        if old is not None and not old.link.may_come_back:
            return  # it said bye (or failed and is still listed): no new pair
        assert self.context is not None
        link = PeerLink(member, offers_first(self.public_key, self.session_id, member), self.started, self._changed)
        negotiation = Negotiation(link, self.context)
        if old is not None:
            # Declared gone (we or they were offline too long) and announcing again: a fresh pair.
            negotiation.follow(old)
        self._replace_stale_sessions(member)
        self.departed.pop(sid, None)
        self._ended_at.pop(sid, None)  # the fresh pair is not leaving
        self.pairs[sid] = negotiation
        negotiation.start()
        self._changed()

    def _replace_stale_sessions(self, member: Member) -> None:
        """The same identity came back with a new session (restarted its app): the old pair, if
        it is not working, is replaced. Two live sessions of one identity are two participants."""
        for sid, negotiation in list(self.pairs.items()):
            link = negotiation.link
            if (sid != member.session_id and link.member.public_key == member.public_key
                    and link.connected_after_s is not None and link.status != PeerStatus.CONNECTED):
                self.finish(link, PeerStatus.LEFT, REJOINED_REASON)
                self._ended_at[sid] = time.monotonic() + REJOINED_LINGER_S

    def member_gone(self, member: Member, status: str, reason: str) -> None:
        negotiation = self.pairs.get(member.session_id)
        if negotiation is None or (negotiation.link.finished and negotiation.link.status != PeerStatus.FAILED):
            return
        if negotiation.heard_recently(time.monotonic()):
            return  # the data channel says it is alive; trust it over the presence list
        self.finish(negotiation.link, PeerStatus(status), reason)

    def message(self, member: Member, body: dict[str, Any], via: str = "") -> None:
        negotiation = self.pairs.get(member.session_id)
        if negotiation is None:
            self.member_seen(member)
            negotiation = self.pairs.get(member.session_id)
            if negotiation is None:
                return
        link = negotiation.link
        if via:  # which network carried it: the timeline shows it (ICE panel, bot report)
            link.record("peer", f"{body['type']} gen {body.get('gen', 0)} received via {via}")
        if body.get("name"):
            link.remote_name = str(body["name"])[:48]
        if body["type"] == "bye":
            self.finish(link, PeerStatus.LEFT, None)
        elif link.finished:
            return
        elif body["type"] in ("offer", "answer"):
            negotiation.on_signal(body)
        self._changed()

    def invalid(self, reason: str) -> None:
        log.info("dropped invalid message: %s", reason)
        self._changed()

    def settings(self, settings: RoomSettings) -> None:
        """The room's settings, on joining and with every newer record: its TURN relay is used unless
        we have our own (a newer relay replaces the room's older one; a record without one keeps
        it); its SFU entry is validated and kept (an invalid one is told, counted and ignored)."""
        shared = "us" if settings.author == self.public_key else fingerprint(settings.author)
        self._room_sfu(settings.sfu, shared)
        if not settings.turn or self._own_turn or settings.turn == self.room_turn:
            return
        own = [s for s in self.ice_servers if s not in self._room_ice]
        self.room_turn = settings.turn
        self._room_ice = [RTCIceServer(urls=t.url, username=t.username, credential=t.credential) for t in settings.turn]
        self.ice_servers = [*own, *self._room_ice]
        self._notice("information", f"using the room's TURN relay {settings.turn[0].url} (shared by {shared})")
        for negotiation in self.pairs.values():  # pairs still trying without a relay: try again with it
            negotiation.relay_added()

    def _room_sfu(self, value: dict[str, Any] | None, shared: str) -> None:
        if value is None:
            if self.room_sfu is not None:
                self._notice("information", f"the room no longer names an SFU ({self.room_sfu.label()}); "
                                            "the call is a mesh")
                self.room_sfu = None
                self._changed()
            return
        if value == self._rejected_sfu:
            return  # the same invalid entry in a newer record (someone shared a relay): told already
        try:
            entry = parse_sfu_entry(value)
        except SfuSettingsError as exc:
            self._rejected_sfu = value
            reason = f"room settings: invalid SFU entry ({exc})"
            self.counters.invalid(reason)
            log.info("%s", reason)
            self._notice("warning", f"the room's SFU entry (shared by {shared}) is invalid: {exc}; "
                                    "the call stays a mesh")
            self.room_sfu = None
            self._changed()
            return
        self._rejected_sfu = None
        if entry != self.room_sfu:
            self.room_sfu = entry
            when = (f"the call moves onto it at {self.sfu_at} members" if self.sfu_at
                    else "this call stays a mesh (sfu_at = 0)")
            self._notice("information", f"the room names an SFU: {entry.label()} room {entry.room} "
                                        f"({entry.plugin}), shared by {shared}; {when}")
            self._changed()

    @property
    def room_sfu_label(self) -> str | None:
        """What the snapshot shows of the room's SFU ("janus @ host room N"; never its PIN)."""
        return None if self.room_sfu is None else f"{self.room_sfu.label()} room {self.room_sfu.room}"

    def apply_sending(self, publishing: bool, kinds: tuple[str, ...] = ("audio", "video")) -> None:
        """Pause our mesh media to each peer that receives it through the SFU while we publish there;
        send it again everywhere else (a new connection, our SFU gone, the peer back on the mesh)."""
        for negotiation in self.pairs.values():
            link, pc = negotiation.link, negotiation.link.pc
            if pc is None or link.finished:
                continue
            pause = publishing and link.peer_gets_us_from_sfu
            paused = id(pc) in link.paused_senders
            if pause and not paused:
                link.paused_senders[id(pc)] = self.media.pause_sending(pc, kinds)
                link.record("sfu", "our mesh media to them paused (they get it through the SFU)")
            elif paused and not pause:
                self.media.resume_sending(pc, link.paused_senders.pop(id(pc)))
                link.record("sfu", "our mesh media to them resumed")

    def alive(self, member: Member) -> bool:
        negotiation = self.pairs.get(member.session_id)
        return (negotiation is not None and negotiation.link.member.key == member.key
                and negotiation.link.status == PeerStatus.CONNECTED)

    def loop_failed(self, name: str, error: str) -> None:
        """A background loop crashed (a bug) and is being restarted: say so, never stay silent."""
        self._notice("error", f"internal error in the {name} loop ({error}); it was restarted — "
                              "please report this with the log (SDPARTA_LOG=INFO)")
