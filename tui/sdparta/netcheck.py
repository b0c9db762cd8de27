"""Moved to :mod:`sdparta.netchecks` (the network-checks layer). This re-export exists only until
``engine/call.py`` imports ``sdparta.netchecks`` itself; then delete this file."""

from sdparta.netchecks import Check, check_portal, check_stun, check_turn, gather_candidates, nat_mapping

__all__ = ["Check", "check_portal", "check_stun", "check_turn", "gather_candidates", "nat_mapping"]
