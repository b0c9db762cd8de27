"""Open a room on the networks a call names: portals, relays, or both at once."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from sdparta.nostr.pool import RelayPool
from sdparta.room.combined import CombinedRoom
from sdparta.room.events import RoomEvents, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.nostr_room import NostrRoom
from sdparta.room.rendezvous import Rendezvous
from sdparta.room.session import RoomSession
from sdparta.room.wire import TurnServer
from sdparta.store.base import Store


def open_room(keys: RoomKeys, identity: Identity, name: str, session_id: str, events: RoomEvents, *,
              store: Store | None, relays: RelayPool | None, push: bool = True,
              timing: SessionTiming | None = None, relay_timing: SessionTiming | None = None,
              share_turn: list[TurnServer] | None = None, share_sfu: dict[str, Any] | None = None) -> Rendezvous:
    """The room over the portals (``store``) and/or the relays; one network is used directly, two are
    combined (written to both, read from both). ``share_turn`` / ``share_sfu``: our fields of the room's
    settings (protocol.md §5a), merged into what the room holds on joining."""
    makers: list[Callable[[RoomEvents], Rendezvous]] = []
    if store is not None:
        makers.append(lambda ev: RoomSession(store, keys, identity, name, session_id, ev, push=push, timing=timing,
                                             share_turn=share_turn, share_sfu=share_sfu))
    if relays is not None:
        makers.append(lambda ev: NostrRoom(relays, keys, identity, name, session_id, ev, timing=relay_timing,
                                           share_turn=share_turn, share_sfu=share_sfu))
    if not makers:
        raise ValueError("a room needs a portal or a relay (--portal URL or --relay wss://…)")
    if len(makers) == 1:
        return makers[0](events)
    return CombinedRoom(makers, events, session_id=session_id, name=name)


def public_relays(keys: RoomKeys, candidates: Sequence[str], count: int) -> list[str]:
    """``count`` of the built-in public relays, the same for everyone in the room (ranked by an HMAC
    under the room's tag key: rooms spread over the list, strangers cannot tell which room is where)."""
    def rank(url: str) -> bytes:
        return hmac.new(keys.tag_key, b"sdparta/v1/public-relay\x00" + url.encode(), hashlib.sha256).digest()
    return sorted(dict.fromkeys(candidates), key=rank)[:count]
