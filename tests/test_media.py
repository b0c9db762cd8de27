"""Media sources and sinks with real codecs: tone in → tone out, frames counted, devices absent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from aiortc.codecs import get_decoder, get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sdparta.engine import codec_tuning
from sdparta.media.analysis import dominant_frequencies, read_wav, tone_power
from sdparta.media.sinks import AudioMixer, VideoSink, WavFileOutput, open_audio_output
from sdparta.media.sources import Switchable, TestPatternTrack, ToneTrack, open_camera

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)


async def test_test_pattern_is_yuv420p_and_moves() -> None:
    track = TestPatternTrack(160, 120, fps=30, label="a")
    frames = [await track.recv() for _ in range(3)]
    assert all(f.format.name == "yuv420p" and (f.width, f.height) == (160, 120) for f in frames)
    assert frames[1].pts - frames[0].pts == 3000  # 90 kHz clock at 30 fps
    a, b = (f.to_ndarray(format="gray") for f in frames[:2])
    assert not np.array_equal(a, b)


async def test_tone_frequency_and_pacing() -> None:
    track = ToneTrack(frequency_hz=700)
    start = time.monotonic()
    frames = [await track.recv() for _ in range(25)]
    assert time.monotonic() - start >= 0.4  # 24 frame periods of 20 ms, paced by the clock
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32) / 32768
    assert abs(dominant_frequencies(samples, 48000, n=1)[0] - 700) < 3


async def test_muted_source_is_silence() -> None:
    switch = Switchable(ToneTrack(frequency_hz=500))
    assert np.abs((await switch.recv()).to_ndarray()).max() > 1000
    switch.set_enabled(False)
    assert np.abs((await switch.recv()).to_ndarray()).max() == 0


async def _opus_round_trip(tones: list[float], wav: Path, bitrate: int = 32000) -> None:
    codec_tuning.configure_opus(bitrate, 1)
    output = WavFileOutput(wav)
    mixer = AudioMixer(output)
    mixer.start()
    for i, hz in enumerate(tones):
        encoder, decoder = get_encoder(OPUS), get_decoder(OPUS)
        source = ToneTrack(frequency_hz=hz)
        key = f"in{i}"

        class Decoded:
            kind = "audio"

            async def recv(self, source=source, encoder=encoder, decoder=decoder):  # type: ignore[no-untyped-def]
                from aiortc.jitterbuffer import JitterFrame

                while True:
                    packets, ts = encoder.encode(await source.recv())
                    if packets:
                        return decoder.decode(JitterFrame(data=packets[0], timestamp=ts))[0]

        asyncio.get_running_loop().create_task(mixer.consume(key, Decoded()))  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while min(mixer.input_stats(f"in{i}")[1] for i in range(len(tones))) < 2.0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await mixer.close()


async def test_opus_tones_mix_into_wav(tmp_path: Path) -> None:
    wav = tmp_path / "mix.wav"
    await _opus_round_trip([440.0, 660.0], wav)
    samples, rate = read_wav(wav)
    assert rate == 48000 and len(samples) > rate
    assert tone_power(samples, rate, 440) > 0.2 and tone_power(samples, rate, 660) > 0.2
    assert tone_power(samples, rate, 550) < 0.01


async def test_vp8_frames_reach_video_sink() -> None:
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)
    encoder, decoder = get_encoder(vp8), get_decoder(vp8)
    source = TestPatternTrack(160, 120, fps=30)
    sink = VideoSink()
    from aiortc.jitterbuffer import JitterFrame

    class Decoded:
        kind = "video"
        sent = 0

        async def recv(self):  # type: ignore[no-untyped-def]
            from aiortc.mediastreams import MediaStreamError

            if self.sent >= 10:
                raise MediaStreamError
            self.sent += 1
            packets, ts = encoder.encode(await source.recv())
            from aiortc.codecs.vpx import vp8_depayload

            return decoder.decode(JitterFrame(data=b"".join(vp8_depayload(p) for p in packets), timestamp=ts))[0]

    await sink.consume(Decoded())  # type: ignore[arg-type]
    assert sink.frames == 10
    latest = sink.latest()
    assert latest is not None and latest[0] == 10 and latest[1].shape == (120, 160, 3)


def test_missing_devices_are_states_not_crashes(tmp_path: Path) -> None:
    result = open_camera("/dev/video-nonexistent")
    assert result.track is None and "does not exist" in (result.error or "")
    output, state = open_audio_output("device")
    assert state in ("device", "missing")  # no sound card here: "missing", never an exception
    output.close()
    wav_output, wav_state = open_audio_output(str(tmp_path / "x.wav"))
    assert wav_state == "wav"
    wav_output.close()
