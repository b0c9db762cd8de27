"""The aiortc side of tests/test_browser_interop.py, run in the peer namespace: JSON lines on stdin/stdout.

stdin: {"offer": SDP, "end": "safe"|"always", "media": bool} → stdout {"answer": SDP, "safe": bool}
       ("media": answer with sdparta's tone and test pattern); {"make_offer": true} → {"offer": SDP};
       {"answer": SDP} → {"accepted": true, "safe": bool}; {"send": TEXT}; {"quit": true}.
stdout events: {"frames": {"audio": N, "video": N}} (received so far, twice a second), {"state": S},
       {"message": TEXT}, {"connected": {"remote": [...], "selected": [type, address]}}.
End-of-candidates goes through sdparta's own rule (engine.ice_adapter.end_of_candidates_safe).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sdparta.engine.ice_adapter import end_of_candidates_safe, ice_details
from sdparta.media.sources import TestPatternTrack, ToneTrack


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels: list = []
    began = time.monotonic()

    def wire(channel) -> None:  # type: ignore[no-untyped-def]
        channels.append(channel)
        channel.on("message", lambda m: emit(message=str(m)))

    pc.on("datachannel", wire)
    frames = {"audio": 0, "video": 0}

    async def count(track) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                await track.recv()
            except Exception:
                return
            frames[track.kind] += 1

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(count(track))))
    tasks: list = []

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            emit(frames=dict(frames))

    tasks.append(asyncio.ensure_future(report()))

    @pc.on("connectionstatechange")
    def _state() -> None:
        emit(state=pc.connectionState, after_s=round(time.monotonic() - began, 3))
        if pc.connectionState == "connected":
            selected, _, _, remote = ice_details(pc)
            emit(connected={"remote": [[c.type, c.address] for c in remote],
                            "selected": None if selected is None else [selected.remote.type, selected.remote.address]})

    async def end(mode: str) -> bool:
        safe = end_of_candidates_safe(pc)
        if safe or mode == "always":
            await pc.addIceCandidate(None)
        return safe

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if "offer" in cmd:
            began = time.monotonic()
            await pc.setRemoteDescription(RTCSessionDescription(cmd["offer"], "offer"))
            safe = await end(cmd.get("end", "safe"))
            if cmd.get("media"):
                pc.addTrack(ToneTrack(440.0))
                pc.addTrack(TestPatternTrack())
            await pc.setLocalDescription(await pc.createAnswer())
            emit(answer=pc.localDescription.sdp, safe=safe,
                 remote=[[c.type, c.address] for c in ice_details(pc)[3]])
        elif "make_offer" in cmd:
            wire(pc.createDataChannel("interop"))
            await pc.setLocalDescription(await pc.createOffer())
            emit(offer=pc.localDescription.sdp)
        elif "answer" in cmd:
            began = time.monotonic()
            await pc.setRemoteDescription(RTCSessionDescription(cmd["answer"], "answer"))
            emit(accepted=True, safe=await end(cmd.get("end", "safe")))
        elif "send" in cmd:
            channels[-1].send(cmd["send"])
        elif "quit" in cmd:
            break
    await pc.close()


asyncio.run(main())
