"""The aiortc side of an SFU connection: peer connections as Janus needs them, offers and answers.

``bundlePolicy=max-bundle`` always: with aiortc's default (BALANCED) every video m-line after the
first gets a transport of its own that Janus never talks to, so it receives nothing. aiortc gathers
every candidate before ``setLocalDescription`` returns, so the SDP it hands Janus is complete (no
trickle needed); Janus puts its own candidates in its SDP too.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

__all__ = ["accept_offer", "apply_answer", "make_offer", "new_peer_connection"]


def new_peer_connection(ice_servers: Sequence[RTCIceServer] = ()) -> RTCPeerConnection:
    # An empty list, never None: with None aiortc adds Google's public STUN server by itself.
    return RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers),
                                              bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


async def make_offer(pc: RTCPeerConnection) -> dict[str, str]:
    await pc.setLocalDescription(await pc.createOffer())
    return {"type": "offer", "sdp": pc.localDescription.sdp}


async def apply_answer(pc: RTCPeerConnection, jsep: dict[str, str] | None) -> None:
    if jsep is None or jsep.get("type") != "answer":
        raise ValueError("Janus sent no SDP answer")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))


async def accept_offer(pc: RTCPeerConnection, jsep: dict[str, str]) -> dict[str, str]:
    """Apply Janus' offer and return our answer."""
    await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return {"type": "answer", "sdp": pc.localDescription.sdp}
