"""Audio analysis used by tests, bots and reports to prove a tone came out at its frequency.

Pure numpy (``numpy.fft``); samples are mono floats in -1..1 — integer arrays (s16) are scaled and
(frames, channels) arrays are averaged to mono, so raw decoder output can be passed directly.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

__all__ = ["as_mono_float", "dominant_frequencies", "read_wav", "rms", "tone_power"]

#: Frequencies below this are ignored as peaks (DC offset, rumble).
MIN_PEAK_HZ = 20.0


def as_mono_float(samples: np.ndarray) -> np.ndarray:
    """float64 mono in -1..1 from float or integer samples, 1-D or (frames, channels)."""
    data = np.asarray(samples)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    else:
        data = data.astype(np.float64, copy=False)
    if data.ndim == 2:
        data = data.mean(axis=1)
    elif data.ndim != 1:
        raise ValueError(f"expected 1-D or (frames, channels) samples, got shape {data.shape}")
    return data


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in -1..1 and the sample rate (channels are averaged).

    Reads 16- and 32-bit PCM, which is what :class:`~sdparta.media.sinks.WavFileOutput` and
    most tools write."""
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    dtypes = {2: "<i2", 4: "<i4"}
    if width not in dtypes:
        raise ValueError(f"{path}: {8 * width}-bit WAV is not supported (16 or 32 bit PCM only)")
    data = np.frombuffer(raw, dtype=dtypes[width])
    data = data[: data.size - data.size % channels].reshape(-1, channels)
    return as_mono_float(data).astype(np.float32), rate


def rms(samples: np.ndarray) -> float:
    """Root mean square level, 0..1 (0 for no samples)."""
    data = as_mono_float(samples) if np.asarray(samples).ndim else np.zeros(0)
    return float(np.sqrt(np.mean(np.square(data)))) if data.size else 0.0


def _spectrum(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and power of the Hann-windowed signal with its DC offset removed."""
    data = as_mono_float(samples)
    data = data - data.mean()
    power = np.abs(np.fft.rfft(data * np.hanning(data.size))) ** 2
    return np.fft.rfftfreq(data.size, 1 / sample_rate), power


def tone_power(samples: np.ndarray, sample_rate: int, freq_hz: float, bandwidth_hz: float = 5.0) -> float:
    """Fraction (0..1) of the signal's power within ±``bandwidth_hz`` of ``freq_hz``.

    The band is widened to at least ±2 FFT bins, which holds a windowed pure tone's main lobe,
    so short excerpts still score a pure tone near 1."""
    data = as_mono_float(samples)
    if data.size < 2:
        return 0.0
    freqs, power = _spectrum(data, sample_rate)
    total = float(power.sum())
    if total <= 0:
        return 0.0
    half = max(bandwidth_hz, 2.0 * sample_rate / data.size)
    band = np.abs(freqs - freq_hz) <= half
    return float(power[band].sum()) / total


def dominant_frequencies(samples: np.ndarray, sample_rate: int, n: int = 3,
                         min_separation_hz: float = 30.0) -> list[float]:
    """The ``n`` strongest spectral peaks, strongest first, in Hz (fewer if there are fewer).

    Peaks are local maxima of the spectrum, refined between bins by parabolic interpolation of
    the log power, so half a second of a tone reads within a fraction of a hertz."""
    data = as_mono_float(samples)
    if data.size < 4 or not np.any(data):
        return []
    freqs, power = _spectrum(data, sample_rate)
    inner = power[1:-1]
    is_peak = (inner > power[:-2]) & (inner >= power[2:]) & (freqs[1:-1] >= MIN_PEAK_HZ)
    candidates = np.nonzero(is_peak)[0] + 1
    candidates = candidates[np.argsort(power[candidates])[::-1]]
    bin_hz = sample_rate / data.size
    log_power = np.log(power + 1e-30)
    found: list[float] = []
    for index in candidates:
        a, b, c = log_power[index - 1], log_power[index], log_power[index + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
        freq = float(freqs[index] + offset * bin_hz)
        if all(abs(freq - other) >= min_separation_hz for other in found):
            found.append(freq)
            if len(found) == n:
                break
    return found
