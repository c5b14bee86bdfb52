"""Speech augmentation: make clean (synthetic TTS) speech sound like real people in real places.

Speaker (speed, pitch, vocal-tract length) -> room (reverberation) -> microphone colouring (random
equaliser) -> capture (gain, clipping) ->
channel (telephone, Bluetooth, cheap microphone) -> street (``mix_at_snr`` with ``noise.street_scene``).
All functions take and return float32 mono numpy arrays and draw randomness only from the ``rng``
they are given. Output is *not* limited to [-1, 1]: gains and noise may push peaks past full scale,
and it is the caller's job to normalise before writing int16.

Everything is numpy FFT work (no scipy, no torch): resampling is done by cropping or zero-padding the
spectrum of the whole clip and filters are zero-phase gain curves on it, which is exact for
band-limiting and cheap (~0.1 ms per FFT of a 1 s clip). torchaudio.functional.pitch_shift was measured
at ~20 s for a 1 s clip at 16 kHz (it resamples by a huge rational ratio), hence our own phase vocoder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

BAND_LIMIT_KINDS = ("telephone", "bluetooth", "cheap_mic")
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
BLUETOOTH_NARROW_BAND_HZ = (200.0, 3800.0)  # CVSD/mSBC narrowband, 8 kHz
BLUETOOTH_WIDE_BAND_HZ = (80.0, 7000.0)  # mSBC wideband, 16 kHz
BLUETOOTH_HOLE_FLOOR_DB = -40.0  # codec drops STFT bins this far below the frame's peak
CHEAP_MIC_HIGHPASS_HZ = 200.0
CHEAP_MIC_LOWPASS_HZ = 5000.0
CHEAP_MIC_PEAK_RANGE_HZ = (2000.0, 4000.0)
CHEAP_MIC_PEAK_DB = 6.0
CHEAP_MIC_PEAK_WIDTH_OCTAVES = 0.35
VTLP_BOUNDARY_FRACTION = 0.6  # Jaitly & Hinton: 4800 Hz of an 8 kHz Nyquist
VTLP_SMOOTHING_HZ = 500.0  # wider than the harmonic spacing of any voice, so this is the envelope
VTLP_MAX_GAIN_DB = 20.0
RIR_DRR_RANGE_DB = (0.0, 10.0)  # direct-to-reverberant energy ratio
RIR_N_REFLECTIONS_RANGE = (3, 6)  # inclusive
RIR_EARLY_RANGE_S = (0.002, 0.04)
RIR_MAX_LENGTH_S = 1.0
EQ_CENTRES_HZ = (125.0, 238.0, 454.0, 866.0, 1650.0, 3150.0, 6000.0)  # log-spaced, ~0.93 octave apart
EQ_WIDTH_OCTAVES = 0.45  # standard deviation of each band's bump: neighbours overlap, so the curve is smooth
ACTIVE_FRAME_MS = 25.0
ACTIVE_FLOOR_DB = 35.0
_STFT_N_FFT_S = 0.032  # 512 samples at 16 kHz
_STFT_OVERLAP = 4


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of ``random_augment``; every step is drawn independently."""

    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)  # tempo (and pitch) factor; >1 is faster
    p_pitch: float = 0.2
    pitch_range_semitones: tuple[float, float] = (-2.0, 2.0)
    p_vtlp: float = 0.3
    vtlp_alpha_range: tuple[float, float] = (0.9, 1.1)  # >1 moves formants up
    p_reverb: float = 0.3
    rt60_range_s: tuple[float, float] = (0.2, 0.8)
    p_gain: float = 1.0
    gain_range_db: tuple[float, float] = (-6.0, 6.0)
    p_clip: float = 0.05
    clip_level_range: tuple[float, float] = (0.3, 0.9)  # clip level as a fraction of the clip's own peak
    p_band_limit: float = 0.35
    band_limit_kinds: tuple[str, ...] = BAND_LIMIT_KINDS
    band_limit_weights: tuple[float, ...] = (0.6, 0.2, 0.2)  # real test speech is 8 kHz telephone band
    p_eq: float = 0.0  # random equaliser (``equalize``): microphones, loudspeakers and voices colour speech
    eq_gain_range_db: tuple[float, float] = (-6.0, 6.0)  # gain of each of its bands

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML gives lists; store tuples so the config stays hashable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{f.name} must be a probability in [0, 1], got {value}")
            if f.name.endswith(("_range", "_range_db", "_range_s", "_range_semitones")):
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"AugmentConfig.{f.name} must be (low, high) with low <= high, got {value}")
        unknown = [k for k in self.band_limit_kinds if k not in BAND_LIMIT_KINDS]
        if unknown:
            raise ValueError(f"AugmentConfig.band_limit_kinds has unknown {unknown}; choose from {BAND_LIMIT_KINDS}")
        weights = self.band_limit_weights
        if len(weights) != len(self.band_limit_kinds) or min(weights, default=0) < 0 or sum(weights) <= 0:
            raise ValueError("AugmentConfig.band_limit_weights needs one non-negative weight per band_limit_kinds entry")


def _mono(x: np.ndarray) -> np.ndarray:
    """Validate a mono signal once at the boundary; float64 for the FFT work."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty mono 1-D signal, got shape {x.shape}; mix channels down first")
    return x


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _match_rms(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ry = _rms(y)
    return _f32(y * (_rms(reference) / ry)) if ry > 0 else _f32(y)


@functools.lru_cache(maxsize=8)
def _smooth_sizes(limit: int) -> np.ndarray:
    """All 2^a 3^b 5^c 7^d 11^e <= limit: sizes numpy's pocketfft transforms ~15x faster than odd primes."""
    sizes = [1]
    for p in (2, 3, 5, 7, 11):
        grown = []
        for v in sizes:
            while v <= limit:
                grown.append(v)
                v *= p
        sizes = grown
    return np.array(sorted(sizes))


def _fast_len(n: int) -> int:
    sizes = _smooth_sizes(1 << n.bit_length())
    return int(sizes[np.searchsorted(sizes, n)])


@functools.lru_cache(maxsize=4096)
def _resample_sizes(n: int, n_out: int) -> tuple[int, int]:
    """FFT sizes (P >= n, Q) with Q / P within 0.05 % of n_out / n, both fast (falls back to n, n_out)."""
    sizes = _smooth_sizes(1 << (2 * max(n, n_out)).bit_length())
    p = sizes[(sizes >= n) & (sizes <= 2 * n)]
    target = p * (n_out / n)
    j = np.clip(np.searchsorted(sizes, target), 1, sizes.size - 1)
    q = np.where(np.abs(sizes[j - 1] - target) < np.abs(sizes[j] - target), sizes[j - 1], sizes[j])
    ok = np.flatnonzero(np.abs(q / p * n / n_out - 1.0) < 5e-4)
    return (int(p[ok[0]]), int(q[ok[0]])) if ok.size else (n, n_out)


def _resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited resampling of the whole clip to ``n_out`` samples by cropping/zero-padding its spectrum.

    The clip is zero-padded to an FFT-friendly size P and resampled to a fast size Q with Q/P within
    0.05 % of n_out/n (a tempo error nobody hears), then cropped to ``n_out``.
    """
    n = x.size
    if n_out == n:
        return x
    size_in, size_out = _resample_sizes(n, n_out)
    spec = np.fft.rfft(x, size_in)
    out = np.zeros(size_out // 2 + 1, dtype=spec.dtype)
    m = min(spec.size, out.size)
    out[:m] = spec[:m]
    if size_out > size_in and size_in % 2 == 0:
        out[m - 1] *= 0.5  # the old Nyquist bin stands for +-fs/2 together: split it, as scipy does
    y = np.fft.irfft(out, size_out)[:n_out] * (size_out / size_in)
    return np.pad(y, (0, n_out - y.size))


def _apply_gain_curve(x: np.ndarray, sample_rate: int, gain_fn) -> np.ndarray:
    """Zero-phase filter: multiply the spectrum of ``x`` (zero-padded to a fast size) by ``gain_fn(freqs_hz)``."""
    size = _fast_len(x.size)
    f = np.fft.rfftfreq(size, 1.0 / sample_rate)
    return np.fft.irfft(np.fft.rfft(x, size) * gain_fn(f), size)[: x.size]


def _bumps_gain(f: np.ndarray, centres_hz, gains_db, width_octaves: float) -> np.ndarray:
    """A gain curve whose dB is a sum of Gaussian bumps in log frequency: ``gains_db[i]`` at ``centres_hz[i]``."""
    octaves = np.log2(np.maximum(f, 1.0)[:, None] / np.asarray(centres_hz, np.float64)) / width_octaves
    return 10.0 ** ((np.exp(-0.5 * octaves ** 2) @ np.asarray(gains_db, np.float64)) / 20.0)


def _bandpass_gain(low_hz: float, high_hz: float, order: int = 4):
    """A channel's band: Butterworth-like skirts of ``order``, and nothing at all 5 % above ``high_hz``."""
    def gain(f: np.ndarray) -> np.ndarray:
        hp = (f / low_hz) ** order
        skirts = hp / np.sqrt(1.0 + hp * hp) / np.sqrt(1.0 + (f / high_hz) ** (2 * order))
        return skirts * (f <= 1.05 * high_hz)
    return gain


def _stft_size(sample_rate: int) -> tuple[int, int]:
    n_fft = 1 << int(np.round(np.log2(_STFT_N_FFT_S * sample_rate)))
    return n_fft, n_fft // _STFT_OVERLAP


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed STFT, frames x bins; the signal is zero-padded by n_fft // 2 at the start."""
    n_frames = int(np.ceil((x.size + n_fft // 2) / hop)) + 1
    padded = np.zeros((n_frames - 1) * hop + n_fft)
    padded[n_fft // 2:n_fft // 2 + x.size] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    n_frames, n_fft = frames.shape
    parts = frames.reshape(n_frames, n_fft // hop, hop)
    out = np.zeros((n_frames + n_fft // hop - 1, hop))
    for j in range(n_fft // hop):
        out[j:j + n_frames] += parts[:, j]
    return out.ravel()


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of ``_stft`` (weighted overlap-add), cropped to ``length`` samples."""
    window = np.hanning(n_fft + 1)[:-1]
    y = _overlap_add(np.fft.irfft(spec, n_fft, axis=1) * window, hop)
    norm = _overlap_add(np.broadcast_to(window ** 2, (spec.shape[0], n_fft)), hop)
    y = y / np.maximum(norm, 1e-8)
    y = y[n_fft // 2:n_fft // 2 + length]
    return np.pad(y, (0, length - y.size))


def speed_perturb(x: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (tempo and pitch both change); length becomes round(len / factor)."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    x = _mono(x)
    return _f32(_resample(x, max(1, int(round(x.size / factor)))))


def _polar(mag: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """mag * exp(1j * phase), via float32 sin/cos (SIMD; complex exp is ~10x slower)."""
    phase = (phase - 2 * np.pi * np.floor(phase / (2 * np.pi))).astype(np.float32)
    out = np.empty(mag.shape, np.complex64)
    out.real, out.imag = mag * np.cos(phase), mag * np.sin(phase)
    return out


def _time_stretch(x: np.ndarray, sample_rate: int, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch (pitch kept): ``rate`` > 1 is shorter, length round(len / rate)."""
    n_fft, hop = _stft_size(sample_rate)
    spec = _stft(x, n_fft, hop)
    steps = np.arange(0.0, spec.shape[0] - 1, rate)
    i = steps.astype(np.int64)
    frac = (steps - i)[:, None]
    mag = np.abs(spec)
    mag = (1.0 - frac) * mag[i] + frac * mag[i + 1]
    expected = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft
    angle = np.angle(spec)
    dphi = angle[i + 1] - angle[i] - expected
    dphi = dphi - 2 * np.pi * np.round(dphi / (2 * np.pi)) + expected
    phase = np.concatenate([angle[:1], angle[:1] + np.cumsum(dphi[:-1], axis=0)])
    return _istft(_polar(mag, phase), n_fft, hop, int(round(x.size / rate)))


def pitch_shift(x: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift pitch (and formants) by ``semitones`` keeping duration: phase-vocoder stretch, then resample."""
    x = _mono(x)
    stretched = _time_stretch(x, sample_rate, 2.0 ** (-semitones / 12.0))
    return _match_rms(_resample(stretched, x.size), x)


def _smooth_bins(power: np.ndarray, width: int) -> np.ndarray:
    """Moving average of width ``width`` bins along the last axis (edges reflected)."""
    half = width // 2
    padded = np.concatenate([power[:, half:0:-1], power, power[:, -2:-half - 2:-1]], axis=1)
    c = np.cumsum(padded, axis=1)
    c = np.concatenate([np.zeros((c.shape[0], 1)), c], axis=1)
    return (c[:, width:] - c[:, :-width])[:, : power.shape[1]] / width


def vtlp(x: np.ndarray, sample_rate: int, alpha: float, boundary_hz: float | None = None) -> np.ndarray:
    """Vocal-tract-length perturbation: move formants by the piecewise-linear warp of Jaitly & Hinton (2013).

    The envelope at f moves to ``alpha * f`` below the boundary (default 0.6 x Nyquist, their 4.8 kHz at
    16 kHz) and linearly up to Nyquist above it, so ``alpha`` > 1 raises formants (a shorter vocal tract).
    The warp is applied to each STFT frame's spectral envelope (power smoothed over VTLP_SMOOTHING_HZ) and
    the frame is filtered by warped / original envelope (within +-VTLP_MAX_GAIN_DB); harmonics and phase
    stay put, so pitch is unchanged (pitch_shift does pitch). Warping the raw magnitude and keeping the
    original phase was tried: the moved harmonics no longer match their phase, overlap-add smears them and
    the spectral centroid moved non-monotonically with alpha. The RMS is restored.
    """
    n_fft, hop = _stft_size(sample_rate)
    x = _mono(x)
    spec = _stft(x, n_fft, hop)
    nyquist_hz = sample_rate / 2.0
    boundary_hz = VTLP_BOUNDARY_FRACTION * nyquist_hz if boundary_hz is None else boundary_hz
    knee_out_hz = boundary_hz * min(alpha, 1.0)
    knee_in_hz = knee_out_hz / alpha
    f = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    source_bin = np.interp(f, [0.0, knee_out_hz, nyquist_hz], [0.0, knee_in_hz, nyquist_hz]) * n_fft / sample_rate
    i = np.minimum(source_bin.astype(np.int64), f.size - 2)
    frac = source_bin - i
    power = spec.real ** 2 + spec.imag ** 2
    envelope = _smooth_bins(power, max(3, int(VTLP_SMOOTHING_HZ * n_fft / sample_rate) | 1))
    envelope += 1e-12 * envelope.max() + 1e-30
    warped = (1.0 - frac) * envelope[:, i] + frac * envelope[:, i + 1]
    limit = 10.0 ** (VTLP_MAX_GAIN_DB / 10.0)
    gain = np.sqrt(np.clip(warped / envelope, 1.0 / limit, limit))
    return _match_rms(_istft(spec * gain, n_fft, hop, x.size), x)


def synthetic_rir(sample_rate: int, rng: np.random.Generator, rt60_s: float, *, drr_db: float | None = None,
                  n_reflections: int | None = None, length_s: float | None = None) -> np.ndarray:
    """Room impulse response: direct path at t=0, a few early reflections, exponentially decaying noise tail.

    The tail falls 60 dB in ``rt60_s``; direct-to-reverberant energy ratio is ``drr_db`` (default 0–10 dB).
    Length defaults to ``rt60_s`` (capped at 1 s). The direct path has amplitude 1.
    """
    if rt60_s <= 0:
        raise ValueError(f"rt60_s must be positive, got {rt60_s}")
    length_s = min(rt60_s, RIR_MAX_LENGTH_S) if length_s is None else length_s
    drr_db = float(rng.uniform(*RIR_DRR_RANGE_DB)) if drr_db is None else drr_db
    lo, hi = RIR_N_REFLECTIONS_RANGE
    n_reflections = int(rng.integers(lo, hi + 1)) if n_reflections is None else n_reflections
    n = max(2, int(round(length_s * sample_rate)))
    t = np.arange(n) / sample_rate
    decay = np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # amplitude -60 dB at rt60
    reverb = rng.standard_normal(n) * decay
    reverb[: int(RIR_EARLY_RANGE_S[0] * sample_rate) + 1] = 0.0
    at = np.minimum((rng.uniform(*RIR_EARLY_RANGE_S, n_reflections) * sample_rate).astype(np.int64), n - 1)
    np.add.at(reverb, at, rng.uniform(2.0, 6.0, n_reflections) * rng.choice([-1.0, 1.0], n_reflections) * decay[at])
    reverb *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(np.sum(reverb ** 2), 1e-20))
    reverb[0] = 1.0
    return _f32(reverb)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``x`` with ``rir`` (FFT), aligned on the direct path, same length and RMS as ``x``."""
    x, rir = _mono(x), _mono(rir)
    n = x.size + rir.size - 1
    n_fft = 1 << int(np.ceil(np.log2(n)))
    wet = np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(rir, n_fft), n_fft)
    start = int(np.argmax(np.abs(rir)))
    return _match_rms(wet[start:start + x.size], x)


def band_limit(x: np.ndarray, sample_rate: int, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pass ``x`` through a narrow channel, keeping its length and RMS.

    ``"telephone"``: resample to 8 kHz, band-pass 300–3400 Hz, G.711 mu-law, resample back (nothing
    above 4 kHz survives). ``"bluetooth"``: 8 kHz narrowband or (if ``rng`` picks it and the rate allows)
    16 kHz wideband, with codec-like spectral holes and mild saturation. ``"cheap_mic"``: high-pass
    200 Hz (12 dB/octave), a +6 dB resonance at 2–4 kHz (random with ``rng``, else 3 kHz), roll-off above
    5 kHz (24 dB/octave).
    """
    x64 = _mono(x)
    if kind == "telephone":
        y = _via_rate(x64, sample_rate, TELEPHONE_RATE, lambda z: _mu_law(
            _apply_gain_curve(z, TELEPHONE_RATE, _bandpass_gain(*TELEPHONE_BAND_HZ))))
    elif kind == "bluetooth":
        wide = rng is not None and sample_rate >= 16000 and rng.random() < 0.5
        rate, band = (16000, BLUETOOTH_WIDE_BAND_HZ) if wide else (8000, BLUETOOTH_NARROW_BAND_HZ)
        y = _via_rate(x64, sample_rate, rate, lambda z: _codec(z, rate, band))
    elif kind == "cheap_mic":
        peak_hz = 3000.0 if rng is None else float(rng.uniform(*CHEAP_MIC_PEAK_RANGE_HZ))

        def gain(f: np.ndarray) -> np.ndarray:
            resonance = _bumps_gain(f, [peak_hz], [CHEAP_MIC_PEAK_DB], CHEAP_MIC_PEAK_WIDTH_OCTAVES)
            highpass = (f / CHEAP_MIC_HIGHPASS_HZ) ** 2 / np.sqrt(1.0 + (f / CHEAP_MIC_HIGHPASS_HZ) ** 4)
            lowpass = 1.0 / np.sqrt(1.0 + (f / CHEAP_MIC_LOWPASS_HZ) ** 8)
            return highpass * lowpass * resonance
        y = _apply_gain_curve(x64, sample_rate, gain)
    else:
        raise ValueError(f"band_limit kind must be one of {BAND_LIMIT_KINDS}, got {kind!r}")
    return _match_rms(y, x)


def _via_rate(x: np.ndarray, sample_rate: int, rate: int, process) -> np.ndarray:
    """Run ``process`` on ``x`` resampled to ``rate`` (if lower than ``sample_rate``), then resample back."""
    if rate >= sample_rate:
        return process(x)
    low = _resample(x, max(1, int(round(x.size * rate / sample_rate))))
    return _resample(process(low), x.size)


def _mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """8-bit G.711 mu-law quantisation (relative to full scale 1.0)."""
    x = np.clip(x, -1.0, 1.0)
    code = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.0) / 127.0
    return np.sign(code) * np.expm1(np.abs(code) * np.log1p(mu)) / mu


def _codec(x: np.ndarray, sample_rate: int, band_hz: tuple[float, float]) -> np.ndarray:
    """Codec-like damage: mild tanh saturation at the peak, the codec's band, spectral holes (weak bins dropped)."""
    peak = np.max(np.abs(x))
    if peak > 0:
        x = np.tanh(0.8 * x / peak) * peak / 0.8
    n_fft, hop = _stft_size(sample_rate)
    spec = _stft(_apply_gain_curve(x, sample_rate, _bandpass_gain(*band_hz)), n_fft, hop)
    mag = np.abs(spec)
    spec[mag < mag.max(axis=1, keepdims=True) * 10.0 ** (BLUETOOTH_HOLE_FLOOR_DB / 20.0)] = 0.0
    return _istft(spec, n_fft, hop, x.size)


def equalize(x: np.ndarray, sample_rate: int, gains_db, centres_hz=EQ_CENTRES_HZ,
             width_octaves: float = EQ_WIDTH_OCTAVES) -> np.ndarray:
    """Colour ``x`` as a microphone, a loudspeaker or a voice does, keeping its length and RMS.

    A zero-phase smooth gain curve: in dB, the sum of Gaussian bumps in log frequency, ``gains_db[i]`` at
    ``centres_hz[i]`` with a standard deviation of ``width_octaves``.
    """
    if np.shape(gains_db) != np.shape(centres_hz):
        raise ValueError(f"equalize needs one gain per centre frequency ({np.size(centres_hz)}), got {np.size(gains_db)}")
    return _match_rms(_apply_gain_curve(_mono(x), sample_rate,
                                        lambda f: _bumps_gain(f, centres_hz, gains_db, width_octaves)), x)


def gain_db(x: np.ndarray, db: float) -> np.ndarray:
    """Scale ``x`` by ``db`` decibels."""
    return _f32(x * np.float32(10.0 ** (db / 20.0)))


def clip(x: np.ndarray, level: float) -> np.ndarray:
    """Hard-clip ``x`` at +-``level`` (a fraction of full scale, e.g. 0.5)."""
    if level <= 0:
        raise ValueError(f"clip level must be positive, got {level}")
    return _f32(np.clip(x, -level, level))


def active_rms(x: np.ndarray, sample_rate: int, frame_ms: float = ACTIVE_FRAME_MS,
               floor_db: float = ACTIVE_FLOOR_DB) -> float:
    """RMS over the active frames of ``x``: ``frame_ms`` frames within ``floor_db`` of the loudest frame.

    Leading and trailing silence (and pauses) do not count, so padding speech does not change it.
    """
    x = _mono(x)
    frame = max(1, int(round(sample_rate * frame_ms / 1000.0)))
    n_frames = x.size // frame
    if n_frames == 0:
        return _rms(x)
    energy = np.mean(np.square(x[: n_frames * frame], dtype=np.float64).reshape(n_frames, frame), axis=1)
    loudest = energy.max()
    if loudest <= 0:
        return 0.0
    return float(np.sqrt(np.mean(energy[energy >= loudest * 10.0 ** (-floor_db / 10.0)])))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Add ``noise`` to ``speech`` so that active_rms(speech) / rms(noise) = ``snr_db``.

    The noise is looped or cropped to the speech length (from a random offset when ``rng`` is given) and
    its RMS is taken over that whole span. The speech level is unchanged; the float32 result may
    exceed 1.0 — normalise before converting to int16.
    """
    speech, noise = _mono(speech), np.asarray(noise)
    if noise.ndim != 1 or noise.size == 0:
        raise ValueError(f"noise must be a non-empty mono 1-D signal, got shape {noise.shape}")
    offset = int(rng.integers(0, noise.size)) if rng is not None else 0
    noise = noise[(offset + np.arange(speech.size)) % noise.size].astype(np.float64)  # a long pool is not copied
    speech_rms, noise_rms = active_rms(speech, sample_rate), _rms(noise)
    if speech_rms == 0.0:
        raise ValueError("speech is silent; an SNR cannot be set")
    if noise_rms == 0.0:
        return _f32(speech)  # float32, as every other result (a new array)
    return _f32(speech + noise * (speech_rms / (noise_rms * 10.0 ** (snr_db / 20.0))))


def random_augment(x: np.ndarray, sample_rate: int, rng: np.random.Generator,
                   config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Apply a random chain: speed, pitch, VTLP, reverb, equaliser, gain, clip, band-limit (each with its ``p_*``).

    Speed perturbation changes the length (by 1/factor); every other step keeps it. Deterministic for a
    given ``rng`` state. Returns float32, possibly beyond +-1.0.
    """
    c = config
    y = _mono(x)
    if rng.random() < c.p_speed:
        y = speed_perturb(y, sample_rate, float(rng.uniform(*c.speed_range)))
    if rng.random() < c.p_pitch:
        y = pitch_shift(y, sample_rate, float(rng.uniform(*c.pitch_range_semitones)))
    if rng.random() < c.p_vtlp:
        y = vtlp(y, sample_rate, float(rng.uniform(*c.vtlp_alpha_range)))
    if rng.random() < c.p_reverb:
        y = reverberate(y, synthetic_rir(sample_rate, rng, float(rng.uniform(*c.rt60_range_s))))
    if c.p_eq > 0.0 and rng.random() < c.p_eq:  # off, it draws nothing: recipes without it keep their random stream
        y = equalize(y, sample_rate, rng.uniform(*c.eq_gain_range_db, size=len(EQ_CENTRES_HZ)))
    if rng.random() < c.p_gain:
        y = gain_db(y, float(rng.uniform(*c.gain_range_db)))
    if rng.random() < c.p_clip and y.size:
        y = clip(y, float(np.max(np.abs(y))) * float(rng.uniform(*c.clip_level_range)) + 1e-12)
    if rng.random() < c.p_band_limit:
        weights = np.asarray(c.band_limit_weights, np.float64)
        kind = c.band_limit_kinds[int(rng.choice(len(weights), p=weights / weights.sum()))]
        y = band_limit(y, sample_rate, kind, rng)
    return _f32(y)
