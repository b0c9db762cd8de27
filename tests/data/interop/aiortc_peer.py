"""The aiortc side of tests/test_browser_interop.py, run in the peer namespace: JSON lines on stdin/stdout.

stdin: {"offer": SDP, "end": "safe"|"always"} → stdout {"answer": SDP, "safe": bool};
       {"make_offer": true} → {"offer": SDP}; {"answer": SDP} → {"accepted": true, "safe": bool};
       {"send": TEXT}; {"quit": true}.
stdout events: {"state": S}, {"message": TEXT}, {"connected": {"remote": [...], "selected": {...}}}.
End-of-candidates goes through sdparta's own rule (engine.ice_adapter.end_of_candidates_safe).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sdparta.engine.ice_adapter import end_of_candidates_safe, ice_details


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
