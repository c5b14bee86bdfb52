"""Street-noise synthesizer: horns, traffic, engines, sirens, road rumble, wind and babble.

Every generator has the signature ``gen(duration_s, sample_rate, rng, **params)`` and returns a
float32 mono array of exactly ``round(duration_s * sample_rate)`` samples, **RMS-normalised** to
``TARGET_RMS`` over the samples where the source is sounding: the whole clip for continuous sources,
only the honks for ``car_horn`` (so a short honk in a long clip is as loud as a long one). Parameters
left at ``None`` are drawn from ``rng`` within the ranges below, so a generator called with
``np.random.default_rng(seed)`` is reproducible. ``street_scene`` mixes several of them; it is what
training calls, and ``kinds`` lets evaluation hold some generators out.

Filtering is done by shaping the FFT of the whole clip (zero-phase, circular): one FFT per source,
which keeps a 1 s scene well under 10 ms on one CPU core. Tones are built from a phase track, so
Doppler shifts, rpm ramps and siren sweeps stay click-free. No scipy.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

TARGET_RMS = 0.1
SPEED_OF_SOUND_M_S = 343.0

# car_horn: a horn is a buzzy harmonic tone; two-tone horns sound a 2nd to a 4th apart.
HORN_FUNDAMENTAL_RANGE_HZ = (300.0, 500.0)
HORN_SECOND_TONE_RATIO_RANGE = (1.12, 1.34)
HORN_N_HARMONICS = 8
HORN_HONK_RANGE_S = (0.15, 0.9)
HORN_MAX_HONKS = 3
HORN_ATTACK_S = 0.004
HORN_RELEASE_S = 0.008

# traffic_passby: a car drives past on a straight line at closest distance closest_m.
PASSBY_SPEED_RANGE_M_S = (10.0, 25.0)
PASSBY_CLOSEST_RANGE_M = (2.0, 12.0)
PASSBY_ENGINE_RANGE_HZ = (50.0, 150.0)
PASSBY_N_HARMONICS = 10
PASSBY_NOISE_CUTOFF_RANGE_HZ = (400.0, 2000.0)
PASSBY_TONE_WEIGHT_RANGE = (0.2, 0.6)  # amplitude share of the tone vs. the tyre noise

# engine: firing frequency = rpm / 60 * cylinders / 2 (4-stroke), i.e. ~25 Hz for a 4-cyl idling.
ENGINE_FIRING_RANGE_HZ = (20.0, 80.0)
ENGINE_N_HARMONICS = 16
ENGINE_MAX_HARMONIC_HZ = 4000.0
ENGINE_JITTER_FRACTION = 0.02
ENGINE_REV_RATIO_RANGE = (1.5, 3.0)
ENGINE_REV_RAMP_RANGE_S = (0.2, 1.0)
ENGINE_NOISE_WEIGHT = 0.3

# siren: wail and yelp sweep between a low and a high frequency; hi-lo alternates two tones.
SIREN_LOW_RANGE_HZ = (550.0, 800.0)
SIREN_HIGH_RANGE_HZ = (1200.0, 1700.0)
SIREN_WAIL_PERIOD_RANGE_S = (2.0, 6.0)
SIREN_YELP_PERIOD_RANGE_S = (0.15, 0.4)
SIREN_HILO_LOW_RANGE_HZ = (400.0, 700.0)
SIREN_HILO_RATIO_RANGE = (1.25, 1.45)
SIREN_HILO_TONE_RANGE_S = (0.35, 0.7)
SIREN_N_HARMONICS = 5
SIREN_MODES = ("wail", "yelp", "hilo")

# road_rumble: brown (1/f^2) or pink (1/f) noise, high-passed to drop sub-audio drift.
RUMBLE_COLOR_EXPONENTS = {"pink": 1.0, "brown": 2.0}
RUMBLE_HIGHPASS_HZ = 20.0
RUMBLE_CUTOFF_RANGE_HZ = (600.0, 3000.0)
RUMBLE_LEVEL_WANDER_DB = 2.0

# wind: very low-passed noise under a slow log-normal gust envelope.
WIND_CUTOFF_RANGE_HZ = (80.0, 400.0)
WIND_GUST_RATE_RANGE_HZ = (0.2, 1.5)
WIND_GUST_DEPTH_RANGE_DB = (6.0, 20.0)

# babble: several talkers, each a continuous stream of random utterances.
BABBLE_TALKERS_RANGE = (3, 8)  # inclusive
BABBLE_GAIN_RANGE_DB = (-6.0, 0.0)
BABBLE_GAP_RANGE_S = (0.0, 0.3)

# street_scene: how many sources are mixed and at which relative levels.
SCENE_COMPONENTS_RANGE = (1, 4)  # inclusive
SCENE_LEVEL_RANGE_DB = (-15.0, 0.0)

_NOISE_REF_HZ = 20.0  # coloured noise is flat below this frequency (then high-passed)


def _n_samples(duration_s: float, sample_rate: int) -> int:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    n = int(round(duration_s * sample_rate))
    if n < 1:
        raise ValueError(f"duration_s={duration_s} gives no samples at {sample_rate} Hz; pass a positive duration")
    return n


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n."""
    best, p5 = 1 << (n - 1).bit_length(), 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << (-(-n // p35) - 1).bit_length())
            p35 *= 3
        p5 *= 5
    return best


def _uniform(rng: np.random.Generator, low_high: tuple[float, float]) -> float:
    return float(rng.uniform(*low_high))


def _db_to_gain(db: np.ndarray | float) -> np.ndarray | float:
    return np.exp(np.asarray(db) * (np.log(10.0) / 20.0))  # 10**(db/20), but exp is ~5x faster


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _normalise(x: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
    """Scale ``x`` so its RMS (over ``active`` samples, if given) is TARGET_RMS; float32 out."""
    rms = _rms(x if active is None else x[active])
    if rms > 1e-12:
        x = x * (TARGET_RMS / rms)
    return x.astype(np.float32)


def _lowpass_gain(f: np.ndarray, cutoff_hz: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (f / cutoff_hz) ** (2 * order))


def _highpass_gain(f: np.ndarray, cutoff_hz: float, order: int = 2) -> np.ndarray:
    r = (f / cutoff_hz) ** order
    return r / np.sqrt(1.0 + r * r)


def _noise(n: int, sample_rate: int, rng: np.random.Generator, exponent: float = 0.0,
           lowpass_hz: float | None = None, highpass_hz: float | None = None) -> np.ndarray:
    """Gaussian noise with power spectrum ~ f**-exponent (0 white, 1 pink, 2 brown), unit RMS.

    Made at an FFT-friendly length and cropped: a 16001-sample FFT is ~20x slower than a 16200 one.
    """
    size = _fast_len(n)
    f = np.fft.rfftfreq(size, 1.0 / sample_rate)
    spec = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    gain = np.maximum(f, _NOISE_REF_HZ) ** (-exponent / 2.0) if exponent else np.ones_like(f)
    if lowpass_hz is not None:
        gain = gain * _lowpass_gain(f, lowpass_hz)
    if highpass_hz is not None:
        gain = gain * _highpass_gain(f, highpass_hz)
    x = np.fft.irfft(spec * gain, size)[:n]
    rms = _rms(x)
    return x / rms if rms > 0 else x


def _smooth_random(n: int, sample_rate: int, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random curve (standard-normal control points, ``rate_hz`` per second, cosine-interpolated)."""
    n_points = int(np.ceil(n / sample_rate * rate_hz)) + 2
    points = rng.standard_normal(n_points)
    pos = np.arange(n) * (rate_hz / sample_rate)
    i = pos.astype(np.int64)
    w = 0.5 - 0.5 * np.cos((np.pi * (pos - i)).astype(np.float32))
    return points[i] * (1.0 - w) + points[i + 1] * w


def _phase(freq_hz: np.ndarray | float, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Phase track (radians in [0, 2 pi), float32) of a tone with instantaneous frequency ``freq_hz``."""
    freq = np.broadcast_to(np.asarray(freq_hz, dtype=np.float64), (n,))
    cycles = rng.uniform(0.0, 1.0) + np.cumsum(freq) / sample_rate
    # Wrap in float64, then go float32: numpy's float32 sin/cos are SIMD and ~15x faster.
    return (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)


def _harmonics(phase: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """sum_k amplitudes[k-1] * sin(k * phase), by the Chebyshev recurrence (one sin and one cos in all)."""
    s_prev, s = np.zeros_like(phase), np.sin(phase)
    two_cos = 2.0 * np.cos(phase)
    amplitudes = [float(a) for a in np.trim_zeros(amplitudes, "b")]  # python floats keep float32 (NEP 50)
    out = amplitudes[0] * s
    for a in amplitudes[1:]:
        s_prev, s = s, two_cos * s - s_prev
        if a:
            out += a * s
    return out


def _harmonic_amplitudes(n_harmonics: int, rolloff: float, max_f0_hz: float, limit_hz: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Fundamental 1, overtones k**-rolloff x U(0.5, 1); zero for harmonics that would reach ``limit_hz``."""
    k = np.arange(1, n_harmonics + 1)
    amps = k ** -rolloff * rng.uniform(0.5, 1.0, n_harmonics)
    amps[k * max_f0_hz >= limit_hz] = 0.0
    amps[0] = 1.0  # the fundamental always dominates, even when it is the only harmonic left
    return amps


def car_horn(duration_s: float, sample_rate: int, rng: np.random.Generator, *, n_tones: int | None = None,
             fundamental_hz: float | None = None, n_honks: int | None = None) -> np.ndarray:
    """Car horn: one or two harmonic tones (fundamental 300–500 Hz), honked 1–3 times with a few-ms attack.

    The RMS is TARGET_RMS over the honks only (silence between honks does not count).
    """
    n = _n_samples(duration_s, sample_rate)
    n_tones = int(rng.integers(1, 3)) if n_tones is None else n_tones
    f0 = _uniform(rng, HORN_FUNDAMENTAL_RANGE_HZ) if fundamental_hz is None else fundamental_hz
    fundamentals = [f0] if n_tones == 1 else [f0, f0 * _uniform(rng, HORN_SECOND_TONE_RATIO_RANGE)]
    tone = np.zeros(n)
    for f in fundamentals:
        amps = _harmonic_amplitudes(HORN_N_HARMONICS, 0.8, f, 0.45 * sample_rate, rng)
        tone += _harmonics(_phase(f, n, sample_rate, rng), amps)
    envelope = np.zeros(n)
    n_attack = max(1, int(HORN_ATTACK_S * sample_rate))
    n_release = max(1, int(HORN_RELEASE_S * sample_rate))
    for _ in range(int(rng.integers(1, HORN_MAX_HONKS + 1)) if n_honks is None else n_honks):
        honk_n = min(n, int(round(_uniform(rng, HORN_HONK_RANGE_S) * sample_rate)))
        start = int(rng.integers(0, n - honk_n + 1))
        honk = np.ones(honk_n)
        a, r = min(n_attack, honk_n // 2), min(n_release, honk_n // 2)
        honk[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
        if r:
            honk[honk_n - r:] = np.linspace(1.0, 0.0, r)
        envelope[start:start + honk_n] = np.maximum(envelope[start:start + honk_n], honk)
    return _normalise(tone * envelope, active=envelope > 0)


def traffic_passby(duration_s: float, sample_rate: int, rng: np.random.Generator, *,
                   speed_m_s: float | None = None, closest_m: float | None = None,
                   pass_time_s: float | None = None, engine_hz: float | None = None,
                   tone_weight: float | None = None) -> np.ndarray:
    """A car passing by: low-passed tyre noise plus a Doppler-shifted engine tone under a 1/distance envelope.

    The car moves at ``speed_m_s`` along a line ``closest_m`` from the listener and is closest at
    ``pass_time_s``. The tone is heard at f * c / (c + v_radial): ~c/(c-v) approaching, c/(c+v) receding.
    """
    n = _n_samples(duration_s, sample_rate)
    v = _uniform(rng, PASSBY_SPEED_RANGE_M_S) if speed_m_s is None else speed_m_s
    d = _uniform(rng, PASSBY_CLOSEST_RANGE_M) if closest_m is None else closest_m
    t0 = _uniform(rng, (0.25 * duration_s, 0.75 * duration_s)) if pass_time_s is None else pass_time_s
    f_engine = _uniform(rng, PASSBY_ENGINE_RANGE_HZ) if engine_hz is None else engine_hz
    w = _uniform(rng, PASSBY_TONE_WEIGHT_RANGE) if tone_weight is None else tone_weight
    position_m = v * (np.arange(n) / sample_rate - t0)
    distance_m = np.sqrt(position_m ** 2 + d ** 2)
    radial_m_s = v * position_m / distance_m  # negative while approaching
    freq = f_engine * SPEED_OF_SOUND_M_S / (SPEED_OF_SOUND_M_S + radial_m_s)
    freq = freq * (1.0 + 0.005 * _smooth_random(n, sample_rate, 4.0, rng))
    amps = _harmonic_amplitudes(PASSBY_N_HARMONICS, 1.0, float(freq.max()), 0.45 * sample_rate, rng)
    tone = _harmonics(_phase(freq, n, sample_rate, rng), amps)
    tone /= max(_rms(tone), 1e-12)
    tyres = _noise(n, sample_rate, rng, exponent=1.0, lowpass_hz=_uniform(rng, PASSBY_NOISE_CUTOFF_RANGE_HZ),
                   highpass_hz=RUMBLE_HIGHPASS_HZ)
    return _normalise((d / distance_m) * (w * tone + (1.0 - w) * tyres))


def engine(duration_s: float, sample_rate: int, rng: np.random.Generator, *, mode: str | None = None,
           firing_hz: float | None = None) -> np.ndarray:
    """Engine idling (``mode="idle"``) or revving (``"rev"``: rpm ramps up 1.5–3x and back).

    A harmonic series of the firing frequency (20–80 Hz) with ~2 % random jitter, plus combustion noise
    pulsed at the firing rate.
    """
    n = _n_samples(duration_s, sample_rate)
    mode = ("idle", "rev")[int(rng.integers(0, 2))] if mode is None else mode
    if mode not in ("idle", "rev"):
        raise ValueError(f"engine mode must be 'idle' or 'rev', got {mode!r}")
    f0 = _uniform(rng, ENGINE_FIRING_RANGE_HZ) if firing_hz is None else firing_hz
    curve = np.ones(n)
    if mode == "rev":
        ratio = _uniform(rng, ENGINE_REV_RATIO_RANGE)
        up_s, hold_s, down_s = (_uniform(rng, ENGINE_REV_RAMP_RANGE_S) for _ in range(3))
        start_s = _uniform(rng, (0.0, max(0.0, duration_s - up_s - hold_s)))
        knots_s = np.cumsum([start_s, up_s, hold_s, down_s])
        curve = np.interp(np.arange(n) / sample_rate, knots_s, [1.0, ratio, ratio, 1.0])
    freq = f0 * curve * (1.0 + ENGINE_JITTER_FRACTION * _smooth_random(n, sample_rate, 10.0, rng))
    phase = _phase(freq, n, sample_rate, rng)
    limit_hz = min(0.45 * sample_rate, ENGINE_MAX_HARMONIC_HZ)
    tone = _harmonics(phase, _harmonic_amplitudes(ENGINE_N_HARMONICS, 0.7, float(freq.max()), limit_hz, rng))
    tone /= max(_rms(tone), 1e-12)
    combustion = _noise(n, sample_rate, rng, lowpass_hz=1500.0) * (1.0 + 0.8 * np.cos(phase))
    return _normalise(tone + ENGINE_NOISE_WEIGHT * combustion)


def siren(duration_s: float, sample_rate: int, rng: np.random.Generator, *, mode: str | None = None) -> np.ndarray:
    """Emergency siren: ``"wail"`` (slow sweep, 2–6 s), ``"yelp"`` (fast sweep, 0.15–0.4 s) or ``"hilo"`` (two tones)."""
    n = _n_samples(duration_s, sample_rate)
    mode = SIREN_MODES[int(rng.integers(0, len(SIREN_MODES)))] if mode is None else mode
    t = np.arange(n) / sample_rate
    if mode in ("wail", "yelp"):
        low, high = _uniform(rng, SIREN_LOW_RANGE_HZ), _uniform(rng, SIREN_HIGH_RANGE_HZ)
        period_s = _uniform(rng, SIREN_WAIL_PERIOD_RANGE_S if mode == "wail" else SIREN_YELP_PERIOD_RANGE_S)
        cycle = t / period_s + rng.uniform(0.0, 1.0)
        freq = low + (high - low) * (0.5 - 0.5 * np.cos(2 * np.pi * cycle))
    elif mode == "hilo":
        low = _uniform(rng, SIREN_HILO_LOW_RANGE_HZ)
        high = low * _uniform(rng, SIREN_HILO_RATIO_RANGE)
        tone_s = _uniform(rng, SIREN_HILO_TONE_RANGE_S)
        which = np.floor(t / tone_s + rng.uniform(0.0, 2.0)).astype(np.int64) % 2
        freq = np.where(which == 0, low, high)
    else:
        raise ValueError(f"siren mode must be one of {SIREN_MODES}, got {mode!r}")
    amps = _harmonic_amplitudes(SIREN_N_HARMONICS, 1.0, float(freq.max()), 0.45 * sample_rate, rng)
    return _normalise(_harmonics(_phase(freq, n, sample_rate, rng), amps))


def road_rumble(duration_s: float, sample_rate: int, rng: np.random.Generator, *, color: str | None = None,
                cutoff_hz: float | None = None) -> np.ndarray:
    """Tyre/road rumble: brown (1/f^2) or pink (1/f) noise, high-passed at 20 Hz and low-passed at 0.6–3 kHz."""
    colors = tuple(RUMBLE_COLOR_EXPONENTS)
    color = colors[int(rng.integers(0, len(colors)))] if color is None else color
    if color not in RUMBLE_COLOR_EXPONENTS:
        raise ValueError(f"road_rumble color must be one of {colors}, got {color!r}")
    n = _n_samples(duration_s, sample_rate)
    cutoff_hz = _uniform(rng, RUMBLE_CUTOFF_RANGE_HZ) if cutoff_hz is None else cutoff_hz
    x = _noise(n, sample_rate, rng, RUMBLE_COLOR_EXPONENTS[color], cutoff_hz, RUMBLE_HIGHPASS_HZ)
    wander_db = RUMBLE_LEVEL_WANDER_DB * _smooth_random(n, sample_rate, 0.5, rng)
    return _normalise(x * _db_to_gain(wander_db))


def wind(duration_s: float, sample_rate: int, rng: np.random.Generator, *, cutoff_hz: float | None = None,
         gust_rate_hz: float | None = None, gust_depth_db: float | None = None) -> np.ndarray:
    """Wind gusts: pink noise low-passed at 80–400 Hz under a slow random (log-normal) amplitude envelope."""
    n = _n_samples(duration_s, sample_rate)
    cutoff_hz = _uniform(rng, WIND_CUTOFF_RANGE_HZ) if cutoff_hz is None else cutoff_hz
    rate_hz = _uniform(rng, WIND_GUST_RATE_RANGE_HZ) if gust_rate_hz is None else gust_rate_hz
    depth_db = _uniform(rng, WIND_GUST_DEPTH_RANGE_DB) if gust_depth_db is None else gust_depth_db
    x = _noise(n, sample_rate, rng, exponent=1.0, lowpass_hz=cutoff_hz, highpass_hz=10.0)
    envelope_db = 0.5 * depth_db * _smooth_random(n, sample_rate, rate_hz, rng)
    return _normalise(x * _db_to_gain(envelope_db))


def babble(duration_s: float, sample_rate: int, rng: np.random.Generator, *,
           speech: Sequence[np.ndarray] | None = None, n_talkers: int | None = None) -> np.ndarray:
    """Crowd babble: ``n_talkers`` (3–8) continuous streams of random utterances from ``speech``, mixed at random gains.

    ``speech`` is a list of mono float arrays at ``sample_rate`` (e.g. non-keyword sentences); utterances
    are reused when there are fewer of them than talkers.
    """
    if not speech:
        raise ValueError("babble needs speech to mix: pass speech=[array, ...] (mono float arrays at "
                         "sample_rate, e.g. non-keyword sentences)")
    utterances = []
    for i, u in enumerate(speech):
        u = np.asarray(u, dtype=np.float64)
        if u.ndim != 1 or u.size == 0 or _rms(u) == 0.0:
            raise ValueError(f"speech[{i}] must be a non-empty, non-silent 1-D array, got shape {u.shape}")
        utterances.append(u / _rms(u))
    n = _n_samples(duration_s, sample_rate)
    n_talkers = int(rng.integers(BABBLE_TALKERS_RANGE[0], BABBLE_TALKERS_RANGE[1] + 1)) if n_talkers is None else n_talkers
    mix = np.zeros(n)
    for _ in range(n_talkers):
        pieces, total = [], 0
        skip = int(rng.integers(0, utterances[0].size + 1))  # start mid-utterance, not in sync with others
        while total < n + skip:
            u = utterances[int(rng.integers(0, len(utterances)))]
            gap = np.zeros(int(_uniform(rng, BABBLE_GAP_RANGE_S) * sample_rate))
            pieces += [u, gap]
            total += u.size + gap.size
        stream = np.concatenate(pieces)[skip:skip + n]
        mix += stream * _db_to_gain(_uniform(rng, BABBLE_GAIN_RANGE_DB))
    return _normalise(mix)


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "car_horn": car_horn,
    "traffic_passby": traffic_passby,
    "engine": engine,
    "siren": siren,
    "road_rumble": road_rumble,
    "wind": wind,
    "babble": babble,
}


def street_scene(duration_s: float, sample_rate: int, rng: np.random.Generator,
                 kinds: Sequence[str] | None = None, speech: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """A random street: 1–4 generators from ``kinds`` (default: all) at random levels within 15 dB, RMS TARGET_RMS.

    ``kinds`` restricts the allowed generators (names from ``GENERATORS``) so evaluation can hold some
    out. ``"babble"`` needs ``speech``; with ``kinds=None`` and no speech it is silently left out.
    """
    if kinds is None:
        names = [k for k in GENERATORS if k != "babble" or speech is not None]
    else:
        names = list(dict.fromkeys(kinds))
        unknown = [k for k in names if k not in GENERATORS]
        if unknown:
            raise ValueError(f"unknown noise kinds {unknown}; available: {sorted(GENERATORS)}")
        if "babble" in names and speech is None:
            raise ValueError("kinds includes 'babble' but no speech was given: pass speech=[array, ...] "
                             "or leave 'babble' out of kinds")
    if not names:
        raise ValueError(f"kinds is empty; pass some of {sorted(GENERATORS)}")
    n = _n_samples(duration_s, sample_rate)
    low, high = SCENE_COMPONENTS_RANGE
    n_sources = int(rng.integers(low, min(high, len(names)) + 1))
    mix = np.zeros(n)
    for i in rng.choice(len(names), size=n_sources, replace=False):
        params = {"speech": speech} if names[i] == "babble" else {}
        source = GENERATORS[names[i]](duration_s, sample_rate, rng, **params)
        mix += source * _db_to_gain(_uniform(rng, SCENE_LEVEL_RANGE_DB))
    return _normalise(mix)
