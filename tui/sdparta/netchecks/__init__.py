"""Network checks that name a cause: portal reachability and API, Nostr relays (NIP-11 limits, a probe
published and read back, refusals), STUN answers and the NAT mapping they reveal, TURN allocation
(auth failed / unreachable / TLS failed), and ICE candidate gathering.

aioice swallows STUN/TURN errors while gathering (a wrong TURN password just means "no relay
candidate"), so `sdparta doctor` and the engine's diagnosis ask the servers themselves, here.
Everything is bounded by a timeout; nothing here raises for a network problem, it reports it.

A lower layer: it imports only the store and the nostr client (for the portal and relay checks),
never the engine or a command.
"""

from sdparta.netchecks.check import Check
from sdparta.netchecks.gathering import gather_candidates
from sdparta.netchecks.portal import check_portal
from sdparta.netchecks.relay import check_relay
from sdparta.netchecks.stun import check_stun, nat_mapping
from sdparta.netchecks.turn import check_turn

__all__ = ["Check", "check_portal", "check_relay", "check_stun", "check_turn", "gather_candidates", "nat_mapping"]
