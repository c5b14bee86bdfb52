import numpy as np
import pytest

from drsn_asr.training import noise

SR = 16000


def _speech_like(seed: int, duration_s: float = 1.0, sample_rate: int = SR) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal (f0 100–200 Hz): a stand-in for a sentence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    f0 = rng.uniform(100, 200) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    return (0.1 * voiced * syllables).astype(np.float32)


SPEECH = [_speech_like(seed) for seed in range(4)]


def _make(name: str, duration_s: float = 1.0, seed: int = 0, sample_rate: int = SR, **params) -> np.ndarray:
    if name == "babble":
        params.setdefault("speech", SPEECH)
    return noise.GENERATORS[name](duration_s, sample_rate, np.random.default_rng(seed), **params)


def _power_spectrum(x: np.ndarray, sample_rate: int = SR) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(x.size, 1 / sample_rate), np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2


def _dominant_hz(x: np.ndarray, frame_s: float, sample_rate: int = SR) -> np.ndarray:
    """Frequency of the strongest FFT bin in consecutive frames."""
    n = int(frame_s * sample_rate)
    frames = x[: x.size // n * n].reshape(-1, n) * np.hanning(n)
    return np.argmax(np.abs(np.fft.rfft(frames, axis=1)), axis=1) * sample_rate / n


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("name", sorted(noise.GENERATORS))
@pytest.mark.parametrize("duration_s,sample_rate", [(1.0, 16000), (0.3337, 16000), (0.02, 16000), (0.5, 8000)])
def test_generator_contract(name, duration_s, sample_rate):
    x = _make(name, duration_s, seed=1, sample_rate=sample_rate)
    assert x.dtype == np.float32
    assert x.shape == (round(duration_s * sample_rate),)
    assert np.all(np.isfinite(x))
    if name == "car_horn":  # RMS-normalised over the honks only: silence between them lowers the total
        assert 0.01 < _rms(x) <= noise.TARGET_RMS * 1.001
    else:
        assert _rms(x) == pytest.approx(noise.TARGET_RMS, rel=1e-3)


@pytest.mark.parametrize("name", sorted(noise.GENERATORS))
def test_generator_is_deterministic_per_seed(name):
    a, b, c = _make(name, seed=3), _make(name, seed=3), _make(name, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_car_horn_energy_sits_on_harmonics_of_its_fundamental():
    x = _make("car_horn", 1.0, n_tones=1, fundamental_hz=400.0, n_honks=1)
    f, power = _power_spectrum(x)
    distance_hz = np.abs(f - 400.0 * np.maximum(np.round(f / 400.0), 1))
    assert power[distance_hz < 10].sum() / power.sum() > 0.95
    assert f[np.argmax(power)] == pytest.approx(400.0, abs=2.0)


def test_two_tone_horn_has_a_second_fundamental():
    x = _make("car_horn", 1.0, n_tones=2, fundamental_hz=400.0, n_honks=1)
    f, power = _power_spectrum(x)
    distance_hz = np.abs(f - 400.0 * np.maximum(np.round(f / 400.0), 1))
    assert power[distance_hz < 10].sum() / power.sum() < 0.8


def test_car_horn_has_a_sharp_onset():
    x = _make("car_horn", 1.0, seed=5, n_tones=1, fundamental_hz=400.0, n_honks=1)
    period = SR // 400  # one-period frames: the RMS of a periodic signal does not ripple
    envelope = np.sqrt(np.mean(x[: x.size // period * period].reshape(-1, period) ** 2, axis=1))
    first_sound = np.argmax(x != 0)  # silence before the honk is digital zero
    full = np.argmax(envelope > 0.9 * envelope.max())
    assert first_sound > 0
    assert ((full + 1) * period - first_sound) / SR <= 0.010


@pytest.mark.parametrize("mode", noise.SIREN_MODES)
def test_siren_dominant_frequency_changes_over_time(mode):
    for seed in range(3):
        track_hz = _dominant_hz(_make("siren", 6.0, seed=seed, mode=mode), frame_s=0.05)
        assert track_hz.max() / track_hz.min() > 1.2
        assert noise.SIREN_HILO_LOW_RANGE_HZ[0] - 40 <= track_hz.min()
        assert track_hz.max() <= noise.SIREN_HIGH_RANGE_HZ[1] + 40


def test_yelp_sweeps_faster_than_wail():
    def sweeps(mode):
        track_hz = _dominant_hz(_make("siren", 6.0, seed=2, mode=mode), frame_s=0.025)
        return np.sum(np.abs(np.diff(track_hz)))
    assert sweeps("yelp") > 3 * sweeps("wail")


def test_traffic_passby_is_doppler_shifted_and_loudest_when_passing():
    v, f_engine, c = 20.0, 100.0, noise.SPEED_OF_SOUND_M_S
    x = _make("traffic_passby", 4.0, speed_m_s=v, closest_m=5.0, pass_time_s=2.0, engine_hz=f_engine,
              tone_weight=1.0)
    approaching_hz, receding_hz = _dominant_hz(x[: SR], 1.0)[0], _dominant_hz(x[3 * SR:], 1.0)[0]
    assert approaching_hz > receding_hz
    assert approaching_hz == pytest.approx(f_engine * c / (c - v), rel=0.02)
    assert receding_hz == pytest.approx(f_engine * c / (c + v), rel=0.02)
    assert _rms(x[int(1.75 * SR):int(2.25 * SR)]) > 3 * _rms(x[: SR // 2])


def test_engine_rev_ramps_the_firing_frequency_and_idle_does_not():
    rev_hz = _dominant_hz(_make("engine", 4.0, seed=1, mode="rev", firing_hz=40.0), frame_s=0.2)
    idle_hz = _dominant_hz(_make("engine", 4.0, seed=1, mode="idle", firing_hz=40.0), frame_s=0.2)
    assert rev_hz.max() > 1.4 * rev_hz.min()
    assert np.all(np.abs(idle_hz - 40.0) <= 5.0)


def _spectral_slope(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    """Slope of log power vs log frequency (Welch average of 4096-sample frames) between low_hz and high_hz."""
    n = 4096
    frames = x[: x.size // n * n].reshape(-1, n) * np.hanning(n)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(n, 1 / SR)
    band = (f >= low_hz) & (f <= high_hz)
    return float(np.polyfit(np.log10(f[band]), np.log10(power[band]), 1)[0])


def test_brown_rumble_falls_off_faster_than_pink():
    brown = _spectral_slope(_make("road_rumble", 4.0, color="brown", cutoff_hz=3000.0), 60, 500)
    pink = _spectral_slope(_make("road_rumble", 4.0, color="pink", cutoff_hz=3000.0), 60, 500)
    assert brown == pytest.approx(-2.0, abs=0.3)
    assert pink == pytest.approx(-1.0, abs=0.3)


def test_wind_is_low_frequency_and_gusty():
    x = _make("wind", 4.0, cutoff_hz=200.0, gust_rate_hz=1.0, gust_depth_db=20.0)
    f, power = _power_spectrum(x)
    assert power[f < 500].sum() / power.sum() > 0.95
    frame_rms = np.sqrt(np.mean(x.reshape(-1, SR // 10) ** 2, axis=1))
    assert frame_rms.max() / frame_rms.min() > 2.0


def test_babble_gets_smoother_with_more_talkers():
    def envelope_variation(n_talkers):
        x = _make("babble", 4.0, seed=2, n_talkers=n_talkers)
        frame_rms = np.sqrt(np.mean(x.reshape(-1, SR // 20) ** 2, axis=1))
        return frame_rms.std() / frame_rms.mean()
    assert envelope_variation(8) < 0.6 * envelope_variation(1)


def test_babble_without_speech_says_what_to_pass():
    with pytest.raises(ValueError, match="speech="):
        noise.babble(1.0, SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="speech"):
        noise.street_scene(1.0, SR, np.random.default_rng(0), kinds=["babble", "wind"])


def test_street_scene_contract_and_determinism():
    a = noise.street_scene(1.0, SR, np.random.default_rng(7), speech=SPEECH)
    b = noise.street_scene(1.0, SR, np.random.default_rng(7), speech=SPEECH)
    c = noise.street_scene(1.0, SR, np.random.default_rng(8), speech=SPEECH)
    assert a.dtype == np.float32 and a.shape == (SR,) and np.all(np.isfinite(a))
    assert _rms(a) == pytest.approx(noise.TARGET_RMS, rel=1e-3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_street_scene_only_uses_allowed_kinds(monkeypatch):
    called = []
    for name, gen in list(noise.GENERATORS.items()):
        def spy(*args, _name=name, _gen=gen, **kwargs):
            called.append(_name)
            return _gen(*args, **kwargs)
        monkeypatch.setitem(noise.GENERATORS, name, spy)
    allowed = {"siren", "wind"}
    for seed in range(10):
        noise.street_scene(0.2, SR, np.random.default_rng(seed), kinds=sorted(allowed))
    assert set(called) == allowed
    called.clear()
    for seed in range(20):
        noise.street_scene(0.2, SR, np.random.default_rng(seed))  # no speech: babble left out
    assert "babble" not in called and len(set(called)) >= 4


def test_street_scene_rejects_unknown_kinds_with_the_list():
    with pytest.raises(ValueError, match="car_horn"):
        noise.street_scene(1.0, SR, np.random.default_rng(0), kinds=["jackhammer"])
