"""Local media sources: test pattern and tone (format, timing, content), the mute switch, and real
device opening — missing devices are states, and live PyAV capture is exercised through lavfi."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import os
import re
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from sdparta.media import devices, sinks
from sdparta.media.analysis import dominant_frequencies
from sdparta.media.sources import (
    AudioSourceSpec,
    SwitchableTrack,
    TestPatternTrack,
    ToneTrack,
    VideoSourceSpec,
    parse_audio_source,
    parse_video_source,
)

HAS_SOUND_CARD = os.path.isdir("/dev/snd")


def luma(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    return frame.to_ndarray()[: frame.height]  # yuv420p ndarray: Y rows, then U and V


# ---------------------------------------------------------------------------- test pattern
async def test_pattern_frames_are_yuv420p_with_90khz_pts() -> None:
    track = TestPatternTrack(160, 120, fps=15, label="alice")
    frames = [await track.recv() for _ in range(3)]
    for frame in frames:
        assert frame.format.name == "yuv420p"
        assert (frame.width, frame.height) == (160, 120)
        assert frame.time_base == fractions.Fraction(1, 90000)
    assert [f.pts for f in frames] == [0, 6000, 12000]  # 90 kHz / 15 fps


async def test_pattern_moves_and_differs_per_label() -> None:
    alice, bob = TestPatternTrack(label="alice"), TestPatternTrack(label="bob")
    first, second = await alice.recv(), await alice.recv()
    assert np.count_nonzero(luma(first) != luma(second)) > 100  # scrolling bars and the box
    assert not np.array_equal(first.to_ndarray(), bob.render(0).to_ndarray())
    # Deterministic: the same label renders the same picture (peers are recognisable).
    assert np.array_equal(TestPatternTrack(label="alice").render(5).to_ndarray(), alice.render(5).to_ndarray())


def test_pattern_fills_padded_planes_correctly() -> None:
    """162 px rows are padded to a wider line size; the picture must not shear or pick up garbage."""
    track = TestPatternTrack(162, 120)
    frame = track.render(0)  # frame 0: no scroll yet, box in the top-left corner
    assert frame.planes[0].line_size > frame.width
    ramp = luma(frame)[-1].astype(int)  # bottom row: the grey ramp, left to right
    assert ramp[0] == 16 and ramp[-1] == 235
    assert np.all(np.diff(ramp) >= 0)
    chroma_rows = frame.to_ndarray()[frame.height :]
    assert set(np.unique(chroma_rows[-5:])) <= {128}  # ramp rows carry no colour


def test_pattern_odd_sizes_round_down_to_even() -> None:
    frame = TestPatternTrack(161, 121).render(0)
    assert (frame.width, frame.height) == (160, 120)
    with pytest.raises(ValueError):
        TestPatternTrack(1, 120)


async def test_pattern_is_paced_in_real_time() -> None:
    track = TestPatternTrack(fps=15)
    start = time.monotonic()
    for _ in range(10):
        await track.recv()
    elapsed = time.monotonic() - start
    assert elapsed >= 9 / 15 - 0.02  # nine frame periods after the first frame
    assert elapsed < 3.0


async def test_stopped_track_ends() -> None:
    track = TestPatternTrack()
    await track.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


# ---------------------------------------------------------------------------- tone
async def test_tone_is_s16_with_sample_pts_and_its_frequency() -> None:
    track = ToneTrack(frequency_hz=700)
    start = time.monotonic()
    frames = [await track.recv() for _ in range(25)]
    assert time.monotonic() - start >= 24 * 0.020 - 0.02  # paced: 24 periods of 20 ms
    assert all(f.format.name == "s16" and f.layout.name == "mono" and f.samples == 960 for f in frames)
    assert all(f.sample_rate == 48000 and f.time_base == fractions.Fraction(1, 48000) for f in frames)
    assert [f.pts for f in frames[:3]] == [0, 960, 1920]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    peak = dominant_frequencies(samples, 48000, n=1)
    assert abs(peak[0] - 700) <= 2


def test_tone_phase_is_continuous_across_frames() -> None:
    track = ToneTrack(frequency_hz=441.3, amplitude=0.5)
    samples = np.concatenate([track.render(n).to_ndarray().reshape(-1) for n in range(50)]).astype(float)
    expected = np.round(np.sin(2 * np.pi * 441.3 * np.arange(samples.size) / 48000) * 0.5 * 32767)
    assert np.max(np.abs(samples - expected)) <= 1  # no click at frame boundaries


def test_stereo_tone_has_equal_channels() -> None:
    frame = ToneTrack(channels=2).render(0)
    assert frame.layout.name == "stereo"
    pairs = frame.to_ndarray().reshape(-1, 2)
    assert np.array_equal(pairs[:, 0], pairs[:, 1]) and np.abs(pairs).max() > 9000


# ---------------------------------------------------------------------------- switch
async def test_disabled_audio_is_silence_with_the_same_timing() -> None:
    switch = SwitchableTrack(ToneTrack(frequency_hz=500))
    assert switch.kind == "audio"
    loud = await switch.recv()
    assert np.abs(loud.to_ndarray()).max() > 9000
    switch.set_enabled(False)
    quiet = await switch.recv()
    assert np.abs(quiet.to_ndarray()).max() == 0
    assert (quiet.samples, quiet.sample_rate, quiet.format.name) == (960, 48000, "s16")
    assert quiet.pts == loud.pts + 960 and quiet.time_base == loud.time_base
    switch.set_enabled(True)
    assert np.abs((await switch.recv()).to_ndarray()).max() > 9000


async def test_disabled_video_is_black_and_stop_reaches_the_source() -> None:
    source = TestPatternTrack(160, 120, fps=30)
    switch = SwitchableTrack(source, enabled=False)
    assert switch.kind == "video" and not switch.enabled
    frame = await switch.recv()
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (160, 120)
    data = frame.to_ndarray()
    assert np.all(data[:120] == 16) and np.all(data[120:] == 128)
    switch.set_enabled(True)
    later = await switch.recv()
    assert later.pts == frame.pts + 3000 and luma(later).max() > 150
    switch.stop()
    assert source.readyState == "ended"
    with pytest.raises(MediaStreamError):
        await switch.recv()


# ---------------------------------------------------------------------------- devices
def test_missing_camera_is_a_reason_not_an_exception() -> None:
    result = devices.open_camera("/dev/video-nonexistent")
    assert result.track is None and not result.ok
    assert result.error == "/dev/video-nonexistent does not exist"  # the cause; the caller says "no camera"


@pytest.mark.skipif(bool(__import__("glob").glob("/dev/video*")), reason="this machine has a camera")
def test_no_camera_at_all_is_a_reason() -> None:
    result = devices.open_camera()
    assert result.track is None and result.error == "no /dev/video* devices"


# ---------------------------------------------------------------------------- source specs
@pytest.mark.parametrize(("spec", "expected"), [
    ("mic", AudioSourceSpec("mic")), ("none", AudioSourceSpec("none")), ("tone", AudioSourceSpec("tone", 440.0)),
    ("tone:660", AudioSourceSpec("tone", 660.0)), (" tone:20 ", AudioSourceSpec("tone", 20.0)),
    ("tone:20000", AudioSourceSpec("tone", 20000.0)),
])
def test_audio_source_specs(spec: str, expected: AudioSourceSpec) -> None:
    assert parse_audio_source(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("tone:abc", "the tone frequency 'abc' is not a number"), ("tone:", "the tone frequency '' is not a number"),
    ("tone:19", "outside 20–20000 Hz"), ("tone:30000", "outside 20–20000 Hz"), ("tone:nan", "outside"),
    ("tone:inf", "outside"), ("microphone", "not an audio source (expected mic, tone:HZ"), ("", "not an audio"),
])
def test_bad_audio_source_specs_say_what_would_do(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_audio_source(spec)


def test_video_source_specs() -> None:
    assert parse_video_source("camera") == VideoSourceSpec("camera")
    assert parse_video_source("camera:/dev/video2") == VideoSourceSpec("camera", "/dev/video2")
    assert parse_video_source("pattern") == VideoSourceSpec("pattern")
    assert parse_video_source("none") == VideoSourceSpec("none")
    with pytest.raises(ValueError, match="not a video source"):
        parse_video_source("webcam")
    with pytest.raises(ValueError, match="not a device path"):
        parse_video_source("camera:video0")


async def test_the_engine_opens_sources_with_the_same_parser() -> None:
    """LocalMedia opens what the spec parser says: tone:660 is a 660 Hz tone, camera:PATH that camera;
    a missing device is a notice saying "no camera" once, with the cause."""
    from sdparta.engine.call_config import CallConfig
    from sdparta.engine.local_media import LocalMedia

    notices: list[str] = []
    config = CallConfig(room="r", portals=["http://127.0.0.1:9"], audio="tone:660",
                        video="camera:/dev/video-nonexistent", audio_out="none")
    media = LocalMedia(config, config.codecs, lambda _severity, text: notices.append(text))
    media.open()
    try:
        assert media.audio_switch is not None and media.audio_switch.source.frequency_hz == 660.0
        assert media.camera == "missing" and media.video_switch is None
        assert notices == ["no camera: /dev/video-nonexistent does not exist. Others see your identicon."]
    finally:
        await media.close()


@pytest.mark.skipif(HAS_SOUND_CARD, reason="this machine has a sound card")
async def test_missing_microphone_notice_says_no_microphone_once() -> None:
    from sdparta.engine.call_config import CallConfig
    from sdparta.engine.local_media import LocalMedia

    notices: list[str] = []
    config = CallConfig(room="r", portals=["http://127.0.0.1:9"], audio="mic", video="none", audio_out="none")
    media = LocalMedia(config, config.codecs, lambda _severity, text: notices.append(text))
    media.open()
    try:
        assert media.mic == "missing"
        (notice,) = notices
        assert notice.startswith("no microphone: ") and notice.count("microphone") == 1, notice
        assert "cannot find card" in notice
    finally:
        await media.close()


@pytest.mark.skipif(HAS_SOUND_CARD, reason="this machine has a sound card")
def test_missing_microphone_and_speaker_are_reasons(capfd: pytest.CaptureFixture[str]) -> None:
    mic = devices.open_microphone()
    # The reason is libasound's own cause, not just EIO (which is all PyAV says) — and it is the
    # real cause only when the ALSA configuration was found.
    assert mic.track is None and "cannot find card" in (mic.error or "")
    probe = devices.probe_audio_output()
    assert probe.name is None and not probe.ok and "cannot find card" in (probe.error or "")
    output, state = sinks.open_audio_output("device")
    assert state == "missing" and isinstance(output, sinks.NullOutput)
    assert "cannot find card" in (output.reason or "")
    output.close()
    # libasound writes its complaints to fd 2; a full-screen UI must not get them.
    assert "ALSA lib" not in capfd.readouterr().err


def test_alsa_config_is_pointed_at_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    monkeypatch.delenv("ALSA_CONFIG_DIR", raising=False)
    devices.ensure_alsa_config()
    if os.path.isfile(devices.ALSA_CONFIG_FILE):
        assert os.environ["ALSA_CONFIG_PATH"] == devices.ALSA_CONFIG_FILE
        assert os.environ["ALSA_CONFIG_DIR"] == devices.ALSA_CONFIG_DIR
    monkeypatch.setenv("ALSA_CONFIG_PATH", "/etc/mine.conf")
    devices.ensure_alsa_config()
    assert os.environ["ALSA_CONFIG_PATH"] == "/etc/mine.conf"  # the user's choice wins


async def test_live_video_capture_is_converted_at_the_source() -> None:
    """A real PyAV input read by the capture thread (lavfi stands in for v4l2): yuv420p at our size."""
    result = devices.open_camera("testsrc=size=320x240:rate=30,realtime", 160, 120, input_format="lavfi")
    assert result.track is not None, result.error
    track = result.track
    try:
        frames = [await track.recv() for _ in range(4)]
    finally:
        track.stop()
    assert all(f.format.name == "yuv420p" and (f.width, f.height) == (160, 120) for f in frames)
    assert all(b.pts > a.pts for a, b in itertools.pairwise(frames))
    assert frames[0].time_base == fractions.Fraction(1, 90000)
    assert not track._thread.is_alive()  # type: ignore[attr-defined]  # stop() ends the reader
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_live_audio_capture_is_resampled_to_48k_frames() -> None:
    result = devices.open_microphone("sine=frequency=440:sample_rate=44100,arealtime", input_format="lavfi")
    assert result.track is not None, result.error
    track = result.track
    try:
        frames = [await track.recv() for _ in range(20)]
    finally:
        track.stop()
    assert all(f.format.name == "s16" and f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert [f.pts for f in frames[:3]] == [0, 960, 1920]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[2:]])
    assert abs(dominant_frequencies(samples, 48000, n=1)[0] - 440) <= 2


async def test_capture_queue_drops_old_frames_when_nobody_reads() -> None:
    """Latency over completeness: an unread live source keeps only its newest frames."""
    result = devices.open_microphone("sine=frequency=440:sample_rate=48000", input_format="lavfi")
    assert result.track is not None, result.error
    track = result.track  # no ``arealtime``: the source runs as fast as it can, like a backlog
    try:
        await track.recv()
        deadline = time.monotonic() + 5
        while track.dropped < 50:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "capture never dropped"
            await asyncio.sleep(0.01)
        assert len(track._queue) <= devices.AUDIO_QUEUE  # type: ignore[attr-defined]
    finally:
        track.stop()
