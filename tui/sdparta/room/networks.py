"""Open a room on the networks a call names: portals, relays, or both at once."""

from __future__ import annotations

from collections.abc import Callable

from sdparta.room.combined import CombinedRoom
from sdparta.room.events import RoomEvents, SessionTiming
from sdparta.room.keys import Identity, RoomKeys
from sdparta.room.nostr_room import NostrRoom, RelayNetwork
from sdparta.room.rendezvous import Rendezvous
from sdparta.room.session import RoomSession
from sdparta.room.wire import TurnServer
from sdparta.store.base import Store


def open_room(keys: RoomKeys, identity: Identity, name: str, session_id: str, events: RoomEvents, *,
              store: Store | None, relays: RelayNetwork | None, push: bool = True,
              timing: SessionTiming | None = None, relay_timing: SessionTiming | None = None,
              share_turn: list[TurnServer] | None = None) -> Rendezvous:
    """The room over the portals (``store``) and/or the relays; one network is used directly, two are
    combined (written to both, read from both)."""
    makers: list[Callable[[RoomEvents], Rendezvous]] = []
    if store is not None:
        makers.append(lambda ev: RoomSession(store, keys, identity, name, session_id, ev, push=push, timing=timing,
                                             share_turn=share_turn))
    if relays is not None:
        makers.append(lambda ev: NostrRoom(relays, keys, identity, name, session_id, ev, timing=relay_timing,
                                           share_turn=share_turn))
    if not makers:
        raise ValueError("a room needs a portal or a relay (--portal URL or --relay wss://…)")
    if len(makers) == 1:
        return makers[0](events)
    return CombinedRoom(makers, events, session_id=session_id, name=name)
