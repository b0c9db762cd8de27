"""The aiortc side of an SFU connection: peer connections as Janus needs them, offers and answers.

``bundlePolicy=max-bundle`` always: with aiortc's default (BALANCED) every video m-line after the
first gets a transport of its own that Janus never talks to, so it receives nothing. aiortc gathers
every candidate before ``setLocalDescription`` returns, so the SDP it hands Janus is complete (no
trickle needed); Janus puts its own candidates in its SDP too.

:func:`follow_remote_ssrcs` is the one place in this package that touches aiortc internals (pinned
in pyproject, like ``sdparta.engine.ice_adapter``, which the sfu layer may not import): aiortc
registers a receiver's SSRCs once, at its first ``receive``, and never again, and it routes RTP by
SSRC (never by the MID header extension). Janus recycles an inactive m-line for the next feed of the
same kind with a *new* SSRC, and in a bundle every audio (or video) m-line shares its payload types,
so aiortc cannot place the new SSRC and drops every packet: the recycled track stays silent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.rtcconfiguration import RTCIceTransportPolicy

log = logging.getLogger(__name__)

__all__ = ["SFU_CODECS", "accept_offer", "apply_answer", "follow_remote_ssrcs", "make_offer", "new_peer_connection",
           "prefer_sfu_codecs"]

#: What a Janus room for sdparta must be configured with (``audiocodec = "opus"``, ``videocodec = "vp8"``):
#: the engine sends its shared Opus and VP8 packets (media/fanout.py), encoded once for every path.
SFU_CODECS = {"audio": "audio/opus", "video": "video/vp8"}


def new_peer_connection(ice_servers: Sequence[RTCIceServer] = (), *, relay_only: bool = False) -> RTCPeerConnection:
    # An empty list, never None: with None aiortc adds Google's public STUN server by itself.
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers), iceTransportPolicy=policy,
                                              bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def prefer_sfu_codecs(pc: RTCPeerConnection) -> None:
    """Offer only Opus and VP8 (and RTX) on every sending transceiver: the packets we send are those."""
    for transceiver in pc.getTransceivers():
        wanted = SFU_CODECS.get(transceiver.kind)
        if wanted is None or transceiver.sender.track is None:
            continue
        capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
        transceiver.setCodecPreferences([c for c in capabilities if c.mimeType.lower() in (wanted, "video/rtx")])


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
    follow_remote_ssrcs(pc)
    return {"type": "answer", "sdp": pc.localDescription.sdp}


def _remote_ssrcs(media: Any) -> tuple[int, int | None] | None:
    """(media SSRC, RTX SSRC or None) of an m-line, read as aiortc reads them (first SSRC, second RTX)."""
    ssrcs = [entry.ssrc for entry in media.ssrc]
    if not ssrcs:
        return None
    for group in media.ssrc_group:  # an explicit FID group says which is which
        items = [int(item) for item in group.items]
        if group.semantic == "FID" and len(items) == 2:
            return items[0], items[1]
    return ssrcs[0], ssrcs[1] if len(ssrcs) == 2 else None


def follow_remote_ssrcs(pc: RTCPeerConnection) -> int:
    """Point aiortc's RTP routing at the SSRCs the current remote description gives each receiving
    m-line (see the module doc). Returns how many receivers were re-pointed; never raises: if
    aiortc's internals moved it logs once per call and returns 0 (a recycled m-line then stays silent)."""
    description = pc.remoteDescription
    if description is None:
        return 0
    try:
        by_mid = {media.rtp.muxId: media for media in aiortc_sdp.SessionDescription.parse(description.sdp).media}
        changed = 0
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            media = by_mid.get(transceiver.mid) if transceiver.mid is not None else None
            dtls = receiver.transport
            if media is None or dtls is None or media.direction not in ("sendonly", "sendrecv"):
                continue
            ssrcs = _remote_ssrcs(media)
            if ssrcs is None:
                continue
            main, rtx = ssrcs
            router = dtls._rtp_router
            if receiver not in router.receivers or router.ssrc_table.get(main) is receiver:
                continue  # not receiving yet (aiortc registers it itself), or already routed
            current = {main} if rtx is None else {main, rtx}
            for ssrc in [s for s, r in router.ssrc_table.items() if r is receiver and s not in current]:
                del router.ssrc_table[ssrc]  # the m-line's previous feed
            for ssrc in current:
                router.ssrc_table[ssrc] = receiver
            if rtx is not None:
                receiver._RTCRtpReceiver__rtx_ssrc[rtx] = main
            changed += 1
            log.debug("mid %s: RTP now routed from SSRC %s (RTX %s)", transceiver.mid, main, rtx)
        return changed
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("cannot re-point aiortc's RTP routing for recycled m-lines (aiortc internals moved?): %r", exc)
        return 0
