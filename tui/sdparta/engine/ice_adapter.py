"""The one place that reads aiortc/aioice private internals (versions pinned in pyproject), and
asyncio's datagram transport that aioice's sockets ride on (:func:`drain_udp_sockets`).

aiortc exposes no selected candidate pair, check list or per-pair state; the ICE panel and the
path classification (direct / STUN / TURN) need them.  Everything here degrades to "unknown"
instead of raising if the internals move; tests/test_ice_adapter.py pins the behaviour.
"""

from __future__ import annotations

import logging
from asyncio import selector_events
from typing import Any

from aiortc import RTCPeerConnection

from sdparta.engine.state import CandidateInfo, CandidatePairInfo

log = logging.getLogger(__name__)

_PAIR_STATES = {0: "frozen", 1: "waiting", 2: "in-progress", 3: "succeeded", 4: "failed"}

#: datagrams one UDP socket hands over per readiness event (asyncio's own: one)
DRAIN_DATAGRAMS = 64


def _read_ready_draining(self: Any) -> None:
    """asyncio's ``_SelectorDatagramTransport._read_ready`` (as in CPython 3.11), reading up to
    :data:`DRAIN_DATAGRAMS` datagrams instead of one."""
    for _ in range(DRAIN_DATAGRAMS):
        if self._conn_lost:
            return
        try:
            data, addr = self._sock.recvfrom(self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
        self._protocol.datagram_received(data, addr)


def drain_udp_sockets() -> bool:
    """Let every asyncio UDP socket of this process hand over up to 64 waiting datagrams per event.

    asyncio reads *one* datagram per socket per loop iteration. A bundled connection carries all
    its media on one socket — the SFU's subscription carries every feed of the room — so on a busy
    loop that socket falls behind while the mesh's (one per pair) keep up: its ICE consent replies
    wait behind seconds of media, aioice (no retransmission, 0.5 s timeout) counts each as missed,
    and after six the whole connection closes. False when asyncio's internals moved (then nothing
    changes)."""
    transport = getattr(selector_events, "_SelectorDatagramTransport", None)
    if transport is None or not hasattr(transport, "_read_ready"):
        log.warning("asyncio's datagram transport moved: UDP sockets keep reading one datagram per event")
        return False
    transport._read_ready = _read_ready_draining  # idempotent: every call installs the same function
    return True


def _connection(pc: RTCPeerConnection) -> Any | None:
    """The aioice Connection behind the (bundled) ICE transport, if any."""
    transports: list[Any] = []
    sctp = getattr(pc, "sctp", None)
    if sctp is not None:
        transports.append(sctp.transport.transport)
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            transports.append(dtls.transport)
    for ice_transport in transports:
        connection = getattr(ice_transport, "_connection", None)
        if connection is not None:
            return connection
    return None


def _candidate(c: Any) -> CandidateInfo:
    return CandidateInfo(
        foundation=str(getattr(c, "foundation", "")),
        component=int(getattr(c, "component", 1)),
        protocol=str(getattr(c, "transport", "udp")).lower(),
        type=str(getattr(c, "type", "host")),
        address=str(getattr(c, "host", "")),
        port=int(getattr(c, "port", 0)),
        priority=int(getattr(c, "priority", 0)),
    )


def _pair(pair: Any, nominated_ids: set[int], selected: Any | None) -> CandidatePairInfo:
    state = getattr(pair, "state", None)
    state_value = getattr(state, "value", state)
    return CandidatePairInfo(
        local=_candidate(pair.local_candidate),
        remote=_candidate(pair.remote_candidate),
        state=_PAIR_STATES.get(state_value, str(state_value)) if isinstance(state_value, int) else "unknown",
        nominated=id(pair) in nominated_ids or bool(getattr(pair, "nominated", False)),
        selected=pair is selected,
    )


def ice_details(pc: RTCPeerConnection) -> tuple[CandidatePairInfo | None, tuple[CandidatePairInfo, ...],
                                                tuple[CandidateInfo, ...], tuple[CandidateInfo, ...]]:
    """(selected pair, check list, local candidates, remote candidates) of a peer connection.

    The selected pair is aioice's nominated pair of the first component (the one it sends on); in
    the check list exactly that pair has ``selected`` set, while ``nominated`` may be true for
    several (the controlled side takes every pair the remote nominates)."""
    try:
        connection = _connection(pc)
        if connection is None:
            return None, (), (), ()
        nominated = dict(getattr(connection, "_nominated", {}) or {})
        nominated_ids = {id(p) for p in nominated.values()}
        chosen = nominated[min(nominated)] if nominated else None
        check_list = tuple(_pair(p, nominated_ids, chosen) for p in list(getattr(connection, "_check_list", [])))
        selected = _pair(chosen, nominated_ids, chosen) if chosen is not None else None
        local = tuple(_candidate(c) for c in connection.local_candidates)
        remote = tuple(_candidate(c) for c in connection.remote_candidates)
        return selected, check_list, local, remote
    except Exception:  # internals moved: show less, never crash the engine
        log.debug("cannot read aioice internals", exc_info=True)
        return None, (), (), ()


def path_kind(pair: CandidatePairInfo | None) -> str | None:
    """Classify a selected pair: TURN if either side relays, STUN if either side is reflexive."""
    if pair is None:
        return None
    types = {pair.local.type, pair.remote.type}
    if "relay" in types:
        return "turn"
    if types & {"srflx", "prflx"}:
        return "stun"
    return "direct"


def _ice_transports(pc: RTCPeerConnection) -> list[Any]:
    """The distinct ICE transports of a connection (one when bundled), through aiortc's public API."""
    found: list[Any] = []
    sctp = getattr(pc, "sctp", None)
    candidates = [sctp.transport.transport] if sctp is not None else []
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.transport is not None:
            candidates.append(transceiver.receiver.transport.transport)
    for transport in candidates:
        if all(transport is not other for other in found):
            found.append(transport)
    return found


def end_of_candidates_safe(pc: RTCPeerConnection) -> bool:
    """Whether signalling end-of-candidates (``addIceCandidate(None)``) now cannot kill a pair that would connect.

    Call it right after ``setRemoteDescription`` (aiortc resolves the SDP's mDNS ``.local`` candidates
    inside it, so what resolved is known by then). Browsers send no ``a=end-of-candidates``, and without
    one aioice never fails a dead check list; but on end-of-candidates aioice *prunes every component
    with no remote candidate*. A browser without media permission hides its host addresses behind
    ``.local`` names, which may not resolve here: ending then leaves the answer with no local
    candidates and the pair never connects, while without it the same call connects through a
    peer-reflexive candidate (the browser's checks arrive from its real address). So it is safe only
    when every ICE transport already knows at least one remote candidate; otherwise leave the
    candidates open and let the connect guard end a pair that never connects. (aiortc's own SDPs carry
    ``a=end-of-candidates``: aiortc has ended them already, and the extra signal is a no-op.)"""
    try:
        transports = _ice_transports(pc)
        return bool(transports) and all(t.getRemoteCandidates() for t in transports)
    except Exception:  # internals moved: do not risk pruning a pair that would connect
        log.debug("cannot read remote candidates", exc_info=True)
        return False
