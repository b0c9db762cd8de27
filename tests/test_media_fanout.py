"""One encoder per source, its packets shared by every sender: real VP8 and Opus packets that a
real decoder turns back into the picture and the tone, the same packets for every subscriber."""

from __future__ import annotations

import asyncio
import itertools

import av
import numpy as np
import pytest

from sdparta.engine import codec_tuning
from sdparta.engine.local_media import video_stride_for
from sdparta.media.analysis import dominant_frequencies
from sdparta.media.fanout import EncodedFanout
from sdparta.media.sources import TestPatternTrack, ToneTrack


async def test_video_fanout_shares_decodable_packets_and_starts_with_a_keyframe() -> None:
    fanout = EncodedFanout(TestPatternTrack(160, 120, 15, label="fan"), fps=15)
    first, second = fanout.subscribe(), fanout.subscribe()
    try:
        packets, shared = [], []
        for _ in range(10):
            packets.append(await asyncio.wait_for(first.recv(), 5))
            shared.append(await asyncio.wait_for(second.recv(), 5))
    finally:
        await fanout.stop()
    assert [bytes(p) for p in packets] == [bytes(p) for p in shared]  # encoded once, sent twice
    assert packets[0].is_keyframe
    assert fanout.encoded >= 10
    decoder = av.CodecContext.create("libvpx", "r")
    frames = [f for p in packets for f in decoder.decode(p)]
    assert len(frames) == 10 and (frames[0].width, frames[0].height) == (160, 120)
    assert np.ptp(frames[-1].to_ndarray(format="rgb24")) > 50  # a picture, not a blank frame
    assert all(b.pts > a.pts for a, b in itertools.pairwise(packets))


async def test_a_late_subscriber_gets_a_keyframe_first() -> None:
    fanout = EncodedFanout(TestPatternTrack(160, 120, 15, label="late"), fps=15, keyframe_interval_s=60)
    early = fanout.subscribe()
    try:
        for _ in range(5):
            await asyncio.wait_for(early.recv(), 5)
        late = fanout.subscribe()
        packet = await asyncio.wait_for(late.recv(), 5)
        while not packet.is_keyframe:  # at most the frame already in flight precedes it
            packet = await asyncio.wait_for(late.recv(), 5)
        late.stop()
        assert late not in fanout._subscribers
    finally:
        await fanout.stop()


async def test_a_big_room_gets_every_third_frame_at_a_third_of_the_bitrate_still_decodable() -> None:
    """video_stride 3 (a room of 13): every third source frame is sent, the switch starts with a
    keyframe, and the encoder's bitrate shrinks with the rate (a frame keeps its size: fewer packets)."""
    fanout = EncodedFanout(TestPatternTrack(160, 120, 15, label="big"), fps=15, video_bitrate=150_000,
                           keyframe_interval_s=60)
    track = fanout.subscribe()
    try:
        full = [await asyncio.wait_for(track.recv(), 5) for _ in range(12)]
        fanout.video_stride = 3
        thinned = [await asyncio.wait_for(track.recv(), 5) for _ in range(14)]
    finally:
        await fanout.stop()
    step = 90000 // 15
    assert {b.pts - a.pts for a, b in itertools.pairwise(full)} == {step}
    first = next(i for i, p in enumerate(thinned) if p.is_keyframe)  # at most one frame was in flight
    assert first <= 1, [p.is_keyframe for p in thinned]
    assert {b.pts - a.pts for a, b in itertools.pairwise(thinned[first:])} == {3 * step}
    decoder = av.CodecContext.create("libvpx", "r")
    frames = [f for p in thinned[first:] for f in decoder.decode(p)]
    assert len(frames) == len(thinned) - first and np.ptp(frames[-1].to_ndarray(format="rgb24")) > 50
    # the pattern stays under any budget (~450 B a frame), so the rate is read off the encoder itself
    assert fanout._video is not None and fanout._video.bit_rate == 50_000


def test_the_video_rate_falls_with_the_room_size() -> None:
    assert [video_stride_for(n) for n in (1, 7, 8, 11, 12, 20)] == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("frame_ms", [20, 60])
async def test_audio_fanout_is_opus_that_decodes_to_the_tone(frame_ms: int) -> None:
    codec_tuning.configure_opus(32000, 1)
    fanout = EncodedFanout(ToneTrack(frequency_hz=440.0), open_opus=codec_tuning.open_opus_encoder,
                           opus_frame_ms=frame_ms)
    track = fanout.subscribe()
    try:
        packets = [await asyncio.wait_for(track.recv(), 5) for _ in range(1000 // frame_ms)]
    finally:
        await fanout.stop()
    decoder = av.CodecContext.create("libopus", "r")
    # first channel of whatever layout the decoder picks
    samples = np.concatenate([f.to_ndarray().astype(np.float64).reshape(-1, len(f.layout.channels))[:, 0]
                              if not f.format.is_planar else f.to_ndarray()[0].astype(np.float64)
                              for p in packets for f in decoder.decode(p)])
    rate = 48000
    assert len(samples) >= rate * 0.9
    peak = float(np.abs(samples).max())
    assert peak > 0
    assert abs(dominant_frequencies(samples / peak, rate)[0] - 440) < 10
    assert [p.pts for p in packets] == [i * 48 * frame_ms for i in range(len(packets))]
