"""Media sinks with real codecs and a real peer connection: tone in → tone out of the mixer into a
WAV file, video frames counted in the latest-frame slot, outputs that never crash."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sdparta.media.analysis import dominant_frequencies, read_wav, rms, tone_power
from sdparta.media.sinks import (
    AUDIO_RATE,
    BLOCK_MS,
    AudioMixer,
    AudioOutputSpec,
    DeviceOutput,
    NullOutput,
    VideoSink,
    WavFileOutput,
    open_audio_output,
    parse_audio_output,
)
from sdparta.media.sources import TestPatternTrack, ToneTrack
from support.waits import wait_until

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)


class CodecLoopback(MediaStreamTrack):
    """A source passed through aiortc's real encoder, payloader and decoder, as a receiver sees it."""

    def __init__(self, source: MediaStreamTrack, codec: RTCRtpCodecParameters, limit: int | None = None) -> None:
        super().__init__()
        self.kind = source.kind
        self.source, self.codec, self.limit = source, codec, limit
        self.encoder, self.decoder = get_encoder(codec), get_decoder(codec)
        self.pending: list[av.AudioFrame | av.VideoFrame] = []
        self.sent = 0

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.limit is not None and self.sent >= self.limit:
            self.stop()
            raise MediaStreamError
        while not self.pending:
            payloads, timestamp = self.encoder.encode(await self.source.recv())
            if payloads:
                data = b"".join(depayload(self.codec, p) for p in payloads)
                self.pending = self.decoder.decode(JitterFrame(data=data, timestamp=timestamp))
        self.sent += 1
        return self.pending.pop(0)

    def stop(self) -> None:
        super().stop()
        self.source.stop()


def stereo_tone_frames(hz: float, count: int, amplitude: float = 0.3) -> list[av.AudioFrame]:
    """Frames shaped like aiortc's Opus decoder output: s16 stereo 48 kHz, 20 ms."""
    tone = ToneTrack(frequency_hz=hz, channels=2, amplitude=amplitude)
    return [tone.render(n) for n in range(count)]


# ---------------------------------------------------------------------------- WAV output
def test_wav_is_readable_while_recording_and_after_close(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    output = WavFileOutput(path)
    assert read_wav(path)[0].size == 0  # a valid (empty) file from the start
    block = np.full((960, 1), 1000, dtype=np.int16)
    for _ in range(10):
        output.write(block)
    output.sync()
    samples, rate = read_wav(path)  # while still open
    assert rate == 48000 and samples.size == 9600
    output.write(block)
    output.close()
    output.close()  # idempotent
    samples, _ = read_wav(path)
    assert samples.size == 10560 and abs(float(samples.mean()) - 1000 / 32768) < 1e-6
    with pytest.raises(ValueError):
        output.write(block)


def test_stereo_wav_keeps_channels(tmp_path: Path) -> None:
    import wave

    output = WavFileOutput(tmp_path / "st.wav", channels=2)
    output.write(np.tile(np.array([[1000, -1000]], dtype=np.int16), (480, 1)))
    output.close()
    with wave.open(str(tmp_path / "st.wav")) as wav:
        assert (wav.getnchannels(), wav.getnframes()) == (2, 480)
        pairs = np.frombuffer(wav.readframes(480), dtype="<i2").reshape(-1, 2)
    assert np.all(pairs[:, 0] == 1000) and np.all(pairs[:, 1] == -1000)


def test_killed_recorder_leaves_a_readable_wav(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    code = (
        "import os, signal, time, numpy as np\n"
        "from sdparta.media.sinks import WavFileOutput\n"
        f"out = WavFileOutput({str(path)!r})\n"
        "block = np.full((960, 1), 2000, dtype=np.int16)\n"
        "start = time.monotonic()\n"
        "while time.monotonic() - start < 1.2:\n"
        "    out.write(block)\n"
        "    time.sleep(0.02)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert proc.returncode == -9, proc.stderr
    samples, rate = read_wav(path)
    assert samples.size >= rate // 2  # everything up to the last periodic header rewrite
    assert np.all(samples == np.float32(2000 / 32768))


# ---------------------------------------------------------------------------- open_audio_output
@pytest.mark.skipif(os.path.isdir("/dev/snd"), reason="this machine has a sound card")
def test_missing_sound_card_is_a_state(capfd: pytest.CaptureFixture[str]) -> None:
    output, state = open_audio_output("device")
    assert state == "missing" and isinstance(output, NullOutput)
    assert output.reason and "cannot find card" in output.reason
    output.write(np.zeros((960, 1), dtype=np.int16))  # usable, silently
    output.close()
    assert "ALSA lib" not in capfd.readouterr().err


def test_audio_output_specs(tmp_path: Path) -> None:
    output, state = open_audio_output("none")
    assert state == "none" and isinstance(output, NullOutput) and output.reason is None
    output, state = open_audio_output(str(tmp_path / "out.wav"))
    assert state == "wav" and isinstance(output, WavFileOutput)
    output.close()
    output, state = open_audio_output(str(tmp_path / "no-such-dir" / "out.wav"))
    assert state == "missing" and "no-such-dir does not exist" in (output.reason or "")  # type: ignore[attr-defined]
    output, state = open_audio_output("speakers")
    assert state == "missing" and "speakers" in (output.reason or "")  # type: ignore[attr-defined]


def test_audio_output_spec_parser(tmp_path: Path) -> None:
    """The one parser the command line checks --audio-out/--record-audio with and the open uses."""
    assert parse_audio_output("none") == parse_audio_output("") == AudioOutputSpec("none")
    assert parse_audio_output("device") == AudioOutputSpec("device")
    assert parse_audio_output("device:hw:1") == AudioOutputSpec("device", name="hw:1")
    assert parse_audio_output(str(tmp_path / "x.WAV")) == AudioOutputSpec("wav", path=tmp_path / "x.WAV")
    with pytest.raises(ValueError, match=f"the directory {tmp_path / 'missing'} does not exist"):
        parse_audio_output(str(tmp_path / "missing" / "x.wav"))
    with pytest.raises(ValueError, match="not an audio output"):
        parse_audio_output("speakers")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(ValueError, match="that is a directory"):
        parse_audio_output(str(tmp_path / "dir.wav"))
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="permission denied"):
            parse_audio_output(str(locked / "x.wav"))


async def _local_media_notices(audio_out: str) -> tuple[str, list[str]]:
    from sdparta.engine.call_config import CallConfig
    from sdparta.engine.local_media import LocalMedia

    notices: list[str] = []
    config = CallConfig(room="r", portals=["http://127.0.0.1:9"], audio="none", video="none", audio_out=audio_out)
    media = LocalMedia(config, config.codecs, lambda _severity, text: notices.append(text))
    media.open()
    await media.close()
    return media.audio_out, notices


@pytest.mark.skipif(os.path.isdir("/dev/snd"), reason="this machine has a sound card")
async def test_no_sound_card_advice_names_joins_own_flag() -> None:
    """Only join plays to the sound card; its flag is --audio-out (join has no --record-audio)."""
    state, notices = await _local_media_notices("device")
    assert state == "missing"
    (notice,) = notices
    assert "--audio-out FILE.wav" in notice and "--audio-out none" in notice and "--record-audio" not in notice
    assert "cannot find card" in notice and notice.count("no audio output") == 1, notice


async def test_an_unwritable_recording_says_the_file_error(tmp_path: Path) -> None:
    state, notices = await _local_media_notices(str(tmp_path / "gone" / "x.wav"))
    assert state == "missing"
    (notice,) = notices
    assert "gone does not exist" in notice and "device" not in notice, notice


async def test_device_output_is_paced_by_the_mixer_not_the_device() -> None:
    """ALSA's ``null`` device swallows audio instantly; the mixer must still run in real time."""
    output, state = open_audio_output("device:null")
    assert state == "device" and isinstance(output, DeviceOutput), getattr(output, "reason", None)
    assert output.name.endswith(":null")
    mixer = AudioMixer(output)
    start = time.monotonic()
    mixer.start()
    await wait_until(lambda: output.blocks_written >= 25, "25 blocks on the device", timeout=5)
    elapsed = time.monotonic() - start
    await mixer.close()
    assert elapsed >= 24 * 0.020 - 0.02  # 25 blocks of 20 ms, the first one at once
    assert output.error is None and output.dropped == 0


async def test_mixer_survives_a_failing_output() -> None:
    class Broken:
        closed = False

        def write(self, block: np.ndarray) -> None:
            raise OSError("device unplugged")

        def close(self) -> None:
            self.closed = True

    broken = Broken()
    mixer = AudioMixer(broken)
    mixer.start()
    await wait_until(lambda: mixer.output_error is not None, "the output failure", timeout=2)
    assert "unplugged" in (mixer.output_error or "") and broken.closed
    assert isinstance(mixer.output, NullOutput)
    blocks = mixer.blocks_mixed
    await wait_until(lambda: mixer.blocks_mixed > blocks + 2, "mixing to go on", timeout=2)
    await mixer.close()


async def test_a_recording_keeps_the_calls_time_when_the_loop_stalls(tmp_path: Path) -> None:
    """A starved loop (here: blocked for a second) makes a sound card's mixer skip ahead — no burst —
    but a WAV recording gets every block it is owed, so its samples stay on the wall clock from
    ``started_at`` (tests cut WAV windows by wall time; a big room on two cores starves bots)."""
    period = BLOCK_MS / 1000

    async def stalled(output: Any) -> tuple[AudioMixer, float]:
        mixer = AudioMixer(output)
        mixer.start()
        await asyncio.sleep(0.3)
        time.sleep(1.0)  # the event loop does nothing for a second
        began = time.monotonic()
        await asyncio.sleep(0.2)
        return mixer, began

    recording = WavFileOutput(tmp_path / "stalled.wav")
    mixer, _ = await stalled(recording)
    assert mixer.started_at is not None
    await wait_until(lambda: mixer.blocks_mixed * period >= time.time() - mixer.started_at - 0.1,
                     "the recording to catch up", timeout=20)
    await mixer.close()
    assert recording.frames_written / AUDIO_RATE >= 1.5 - 0.05, recording.frames_written  # 0.3 + 1.0 + 0.2 s

    # a loop whose every pass takes longer than a block (a big room): the recording keeps up anyway
    recording = WavFileOutput(tmp_path / "busy.wav")
    mixer = AudioMixer(recording)
    mixer.start()
    await asyncio.sleep(0.1)
    time.sleep(0.5)  # once behind by more than MAX_CATCH_UP_S …
    busy_until = time.monotonic() + 2.0  # … it must catch up although every pass is slow
    while time.monotonic() < busy_until:
        time.sleep(0.05)  # each pass of the loop: 50 ms of other work
        await asyncio.sleep(0)
    assert mixer.started_at is not None
    lag = time.time() - mixer.started_at - mixer.blocks_mixed * period
    await mixer.close()
    assert lag < 0.8, f"the recording fell {lag:.2f} s behind on a busy loop"

    card = NullOutput()  # stands for a device: timeline False, skips
    mixer, began = await stalled(card)
    behind = (time.monotonic() - began) + 1.0 + 0.3 - mixer.blocks_mixed * period
    await mixer.close()
    assert behind >= 0.7, f"the device's mixer caught up ({behind:.2f} s behind): it must skip the stall"


# ---------------------------------------------------------------------------- mixer logic
class FrameList(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frames: list[av.AudioFrame]) -> None:
        super().__init__()
        self.frames = list(frames)

    async def recv(self) -> av.AudioFrame:
        if not self.frames:
            raise MediaStreamError
        await asyncio.sleep(0)
        return self.frames.pop(0)


async def test_mixer_resamples_sums_and_meters_inputs() -> None:
    mixer = AudioMixer()  # not started: blocks are pulled by hand below
    await mixer.consume("a", FrameList(stereo_tone_frames(440, 10)))
    await mixer.consume("b", FrameList(stereo_tone_frames(660, 10)))
    level, seconds = mixer.input_stats("a")
    assert seconds == pytest.approx(0.2)
    assert level == pytest.approx(0.3 / np.sqrt(2), abs=0.01)  # RMS of a 0.3 sine
    blocks = [mixer.mix_block() for _ in range(10)]
    assert all(b.shape == (960, 1) and b.dtype == np.int16 for b in blocks)
    mixed = np.concatenate(blocks)
    assert sorted(round(f) for f in dominant_frequencies(mixed, 48000, n=2)) == [440, 660]
    assert mixer.stats()["a"].buffered_ms == 0


async def test_mixer_clips_instead_of_wrapping() -> None:
    mixer = AudioMixer()
    for key in ("a", "b"):
        await mixer.consume(key, FrameList(stereo_tone_frames(100, 5, amplitude=0.9)))
    mixed = np.concatenate([mixer.mix_block() for _ in range(5)]).reshape(-1).astype(int)
    single = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in stereo_tone_frames(100, 5, 0.9)])
    assert mixed.max() == 32767 and mixed.min() == -32768
    assert np.all(np.sign(mixed[np.abs(single) > 100]) == np.sign(single[np.abs(single) > 100]))


async def test_mixer_waits_for_the_playout_delay_and_caps_latency() -> None:
    mixer = AudioMixer(playout_ms=60, max_latency_ms=200)
    await mixer.consume("a", FrameList(stereo_tone_frames(440, 2)))  # 40 ms: below the playout delay
    assert not mixer.mix_block().any()
    await mixer.consume("a", FrameList(stereo_tone_frames(440, 1)))  # 60 ms: starts playing
    assert mixer.mix_block().any()
    assert mixer.stats()["a"].buffered_ms == pytest.approx(40)
    await mixer.consume("a", FrameList(stereo_tone_frames(440, 25)))  # a 500 ms burst
    mixer.mix_block()
    stats = mixer.stats()["a"]
    assert stats.buffered_ms <= 60 and stats.dropped_ms >= 400  # skipped to the target, not queued


async def test_removed_input_stops_consuming_and_keeps_its_seconds() -> None:
    mixer = AudioMixer()
    tone = ToneTrack(frequency_hz=440)
    task = asyncio.create_task(mixer.consume("peer", tone))
    await wait_until(lambda: mixer.input_stats("peer")[1] >= 0.1, "audio to arrive", timeout=5)
    mixer.remove_input("peer")
    await asyncio.wait_for(task, 1)  # consume notices at the next frame
    assert "peer" not in mixer.stats()
    assert mixer.input_stats("peer")[0] == 0.0 and mixer.input_stats("peer")[1] >= 0.1
    tone.stop()


# ---------------------------------------------------------------------------- real codecs
async def _record_through_opus(tones: list[float], wav: Path) -> AudioMixer:
    mixer = AudioMixer(WavFileOutput(wav))
    mixer.start()
    tracks = [CodecLoopback(ToneTrack(frequency_hz=hz), OPUS) for hz in tones]
    tasks = [asyncio.create_task(mixer.consume(f"in{i}", t)) for i, t in enumerate(tracks)]
    try:
        await wait_until(lambda: min(mixer.input_stats(f"in{i}")[1] for i in range(len(tones))) >= 1.5,
                         "1.5 s of decoded audio per input", timeout=10)
        levels = [mixer.input_stats(f"in{i}")[0] for i in range(len(tones))]
        assert all(0.1 < level < 0.4 for level in levels), levels
    finally:
        for track in tracks:
            track.stop()
        await asyncio.gather(*tasks)
        await mixer.close()
    return mixer


async def test_opus_tone_comes_out_of_the_wav_at_its_frequency(tmp_path: Path) -> None:
    await _record_through_opus([440.0], tmp_path / "one.wav")
    samples, rate = read_wav(tmp_path / "one.wav")
    assert rate == 48000 and samples.size >= rate
    assert abs(dominant_frequencies(samples, rate, n=1)[0] - 440) <= 2
    assert tone_power(samples, rate, 440) > 0.9
    assert rms(samples) > 0.1


async def test_two_opus_tones_mix_into_one_wav(tmp_path: Path) -> None:
    await _record_through_opus([440.0, 660.0], tmp_path / "two.wav")
    samples, rate = read_wav(tmp_path / "two.wav")
    peaks = dominant_frequencies(samples, rate, n=2)
    assert sorted(round(f) for f in peaks) == [440, 660]
    assert tone_power(samples, rate, 440) > 0.3 and tone_power(samples, rate, 660) > 0.3
    assert tone_power(samples, rate, 550) < 0.01


async def test_vp8_frames_reach_the_video_sink() -> None:
    source = TestPatternTrack(160, 120, fps=30, label="vp8")
    sink = VideoSink()
    assert sink.latest() is None and sink.size is None
    await sink.consume(CodecLoopback(source, VP8, limit=10))
    assert sink.frames == 10 and sink.size == (160, 120)
    latest = sink.latest()
    assert latest is not None
    seq, rgb = latest
    assert seq == 10 and rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
    assert sink.latest() is latest  # converted once per new frame, not per read
    assert not rgb.flags.writeable  # shared between readers
    # The picture survived the codec: close to the source's own frame 9 in RGB.
    original = source.render(9).to_ndarray(format="rgb24").astype(float)
    assert np.abs(rgb.astype(float) - original).mean() < 12


async def test_video_sink_reads_are_safe_from_other_threads() -> None:
    """A UI thread (here three) reads while the loop receives; each reader sees a forward-moving
    sequence of whole frames and the conversions never race."""
    sink = VideoSink()
    stop = threading.Event()
    seen: list[list[int]] = [[] for _ in range(3)]
    errors: list[BaseException] = []

    def reader(log: list[int]) -> None:
        while not stop.is_set():
            try:
                latest = sink.latest()
                if latest is not None:
                    assert latest[1].shape == (120, 160, 3)
                    log.append(latest[0])
            except BaseException as exc:
                errors.append(exc)
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=reader, args=(log,)) for log in seen]
    for thread in threads:
        thread.start()
    try:
        await sink.consume(CodecLoopback(TestPatternTrack(fps=60), VP8, limit=30))
        await wait_until(lambda: all(log and log[-1] == 30 for log in seen) or bool(errors),
                         "every reader to see the last frame", timeout=5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors and sink.frames == 30
    for log in seen:
        assert log == sorted(log) and len(set(log)) > 5


# ---------------------------------------------------------------------------- peer connection
async def test_two_peer_connections_carry_tone_and_pattern(tmp_path: Path) -> None:
    """Real aiortc peers in one process (ICE over this machine's interfaces, DTLS, SRTP, RTP)."""
    wav = tmp_path / "pc.wav"
    mixer = AudioMixer(WavFileOutput(wav))
    sink = VideoSink()
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tone, pattern = ToneTrack(frequency_hz=440), TestPatternTrack(160, 120, fps=15, label="pc")
    tasks: list[asyncio.Task[None]] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            tasks.append(asyncio.create_task(mixer.consume("sender", track)))
        else:
            tasks.append(asyncio.create_task(sink.consume(track)))

    try:
        sender.addTrack(tone)
        sender.addTrack(pattern)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        mixer.start()
        await wait_until(lambda: mixer.input_stats("sender")[1] >= 1.5 and sink.frames >= 10,
                         "1.5 s of audio and 10 video frames over the peer connection", timeout=20)
        assert mixer.input_stats("sender")[0] > 0.1  # speaking
        latest = sink.latest()
        assert latest is not None and latest[1].shape == (120, 160, 3)
    finally:
        await sender.close()
        await receiver.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await mixer.close()
    samples, rate = read_wav(wav)
    assert abs(dominant_frequencies(samples, rate, n=1)[0] - 440) <= 2
    assert tone_power(samples, rate, 440) > 0.8
