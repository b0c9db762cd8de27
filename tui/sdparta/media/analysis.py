"""Audio analysis used by tests and reports to prove a tone came out at its frequency."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in -1..1 and the sample rate (channels are averaged)."""
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit WAV is supported")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0


def _spectrum(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(samples.size)
    power = np.abs(np.fft.rfft(samples * window)) ** 2
    return np.fft.rfftfreq(samples.size, 1 / sample_rate), power


def tone_power(samples: np.ndarray, sample_rate: int, freq_hz: float, bandwidth_hz: float = 5.0) -> float:
    """Fraction of the total spectral power within ±bandwidth of ``freq_hz``."""
    if samples.size == 0:
        return 0.0
    freqs, power = _spectrum(samples, sample_rate)
    total = float(power.sum())
    if total <= 0:
        return 0.0
    band = (freqs >= freq_hz - bandwidth_hz) & (freqs <= freq_hz + bandwidth_hz)
    return float(power[band].sum()) / total


def dominant_frequencies(samples: np.ndarray, sample_rate: int, n: int = 3,
                         min_separation_hz: float = 30.0) -> list[float]:
    """The ``n`` strongest distinct frequencies."""
    freqs, power = _spectrum(samples, sample_rate)
    found: list[float] = []
    for index in np.argsort(power)[::-1]:
        f = float(freqs[index])
        if f > 20 and all(abs(f - g) >= min_separation_hz for g in found):
            found.append(f)
            if len(found) == n:
                break
    return found
