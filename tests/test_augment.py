import dataclasses

import numpy as np
import pytest

from drsn_asr.training import augment

SR = 16000


def _speech_like(seed: int = 0, duration_s: float = 1.0, sample_rate: int = SR) -> np.ndarray:
    """Voiced harmonics (f0 ~120 Hz, up to 7 kHz) under a syllable envelope with 0.1 s silent margins."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(120.0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sample_rate
    formants = lambda f: 1.0 / (1 + ((f - 700) / 300) ** 2) + 0.5 / (1 + ((f - 1800) / 400) ** 2) + 0.1  # noqa: E731
    voiced = sum(formants(120.0 * k) * np.sin(k * phase) for k in range(1, 58))
    syllables = 0.3 + 0.7 * np.sin(np.pi * 4 * t) ** 2
    margin = int(0.1 * sample_rate)
    syllables[:margin] = syllables[-margin:] = 0.0
    return (0.05 * voiced * syllables + 1e-4 * rng.standard_normal(t.size) * (syllables > 0)).astype(np.float32)


SPEECH = _speech_like()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _band_power(x: np.ndarray, low_hz: float, high_hz: float, sample_rate: int = SR) -> float:
    f = np.fft.rfftfreq(x.size, 1 / sample_rate)
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[(f >= low_hz) & (f < high_hz)].sum())


def _peak_hz(x: np.ndarray, sample_rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * sample_rate / x.size)


def _centroid_hz(x: np.ndarray, sample_rate: int = SR) -> float:
    f = np.fft.rfftfreq(x.size, 1 / sample_rate)
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(np.sum(f * power) / np.sum(power))


def _tone(freq_hz: float, duration_s: float = 1.0) -> np.ndarray:
    t = np.arange(int(duration_s * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.234])
def test_speed_perturb_changes_length_and_pitch_by_the_factor(factor):
    y = augment.speed_perturb(_tone(440.0), SR, factor)
    assert y.dtype == np.float32
    assert y.size == round(SR / factor)
    assert _peak_hz(y) == pytest.approx(440.0 * factor, rel=0.01)


@pytest.mark.parametrize("semitones", [-3.0, 2.0])
def test_pitch_shift_moves_pitch_and_keeps_duration(semitones):
    y = augment.pitch_shift(_tone(220.0), SR, semitones)
    assert y.dtype == np.float32 and y.size == SR
    assert _peak_hz(y) == pytest.approx(220.0 * 2 ** (semitones / 12), rel=0.01)
    assert _rms(y[SR // 10:-SR // 10]) == pytest.approx(_rms(_tone(220.0)), rel=0.15)


def test_vtlp_shifts_the_spectral_centroid_in_the_direction_of_alpha():
    up, down = augment.vtlp(SPEECH, SR, 1.15), augment.vtlp(SPEECH, SR, 0.85)
    assert up.size == down.size == SPEECH.size
    assert _centroid_hz(up) > 1.05 * _centroid_hz(SPEECH) > 1.05 * 1.05 * _centroid_hz(down)
    assert _rms(up) == pytest.approx(_rms(SPEECH), rel=1e-3)
    centroids = [_centroid_hz(augment.vtlp(SPEECH, SR, alpha)) for alpha in (0.9, 0.95, 1.05, 1.1)]
    assert centroids == sorted(centroids)


def test_vtlp_moves_formants_not_pitch():
    assert _peak_hz(augment.vtlp(_tone(1000.0), SR, 1.15)) == pytest.approx(1000.0, abs=1.0)


def test_vtlp_with_alpha_one_is_the_identity():
    np.testing.assert_allclose(augment.vtlp(SPEECH, SR, 1.0), SPEECH, atol=1e-5)


def _edc_rt60_s(rir: np.ndarray, sample_rate: int = SR) -> float:
    """RT60 from the Schroeder decay curve of the reverberant part (T20 fit, -5 to -25 dB)."""
    energy = np.cumsum(rir[1:][::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(energy / energy[0])
    fit = (edc_db <= -5) & (edc_db >= -25)
    slope_db_s = np.polyfit(np.flatnonzero(fit) / sample_rate, edc_db[fit], 1)[0]
    return -60.0 / slope_db_s


@pytest.mark.parametrize("rt60_s", [0.3, 0.7])
def test_synthetic_rir_decays_at_rt60_with_the_requested_drr(rt60_s):
    rir = augment.synthetic_rir(SR, np.random.default_rng(0), rt60_s, drr_db=5.0)
    assert rir.dtype == np.float32 and rir[0] == 1.0 and np.argmax(np.abs(rir)) == 0
    assert 10 * np.log10(1.0 / np.sum(rir[1:].astype(np.float64) ** 2)) == pytest.approx(5.0, abs=0.01)
    assert _edc_rt60_s(rir) == pytest.approx(rt60_s, rel=0.25)


def test_reverberate_keeps_length_level_and_onset_and_adds_a_decay_tail():
    burst = np.concatenate([SPEECH[: SR // 2], np.zeros(SR // 2, np.float32)])
    y = augment.reverberate(burst, augment.synthetic_rir(SR, np.random.default_rng(1), 0.5, drr_db=3.0))
    assert y.dtype == np.float32 and y.size == burst.size
    assert _rms(y) == pytest.approx(_rms(burst), rel=1e-4)
    assert np.max(np.abs(y[: int(0.099 * SR)])) < 1e-6  # aligned on the direct path: no energy before onset
    tail = slice(int(0.55 * SR), int(0.75 * SR))
    assert _rms(burst[tail]) == 0.0 and _rms(y[tail]) > 0.01 * _rms(burst[: SR // 2])


def test_telephone_removes_everything_above_4khz_and_below_300hz():
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    y = augment.band_limit(x, SR, "telephone")
    assert y.dtype == np.float32 and y.size == x.size
    assert _rms(y) == pytest.approx(_rms(x), rel=1e-3)
    assert _band_power(y, 4001, 8001) < 1e-6 * _band_power(y, 0, 8001)
    assert _band_power(y, 0, 150) < 1e-2 * _band_power(x, 0, 150)


def test_telephone_keeps_odd_lengths():
    x = SPEECH[:14953]  # a length numpy's FFT is slow at: padded internally, cropped back
    y = augment.band_limit(x, SR, "telephone")
    assert y.size == x.size
    assert _band_power(y, 4001, 8001) < 1e-6 * _band_power(y, 0, 8001)


def test_bluetooth_is_narrowband_or_wideband():
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    narrow = augment.band_limit(x, SR, "bluetooth")  # no rng: narrowband
    assert _band_power(narrow, 4001, 8001) < 1e-6 * _band_power(narrow, 0, 8001)
    widths = set()
    for seed in range(6):
        y = augment.band_limit(x, SR, "bluetooth", np.random.default_rng(seed))
        assert np.all(np.isfinite(y)) and y.size == x.size
        assert _band_power(y, 7500, 8001) < 1e-3 * _band_power(y, 0, 8001)
        widths.add(_band_power(y, 4100, 7000) > 0.01 * _band_power(y, 0, 8001))
    assert widths == {True, False}


def test_cheap_mic_cuts_lows_and_highs_and_has_a_resonance():
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    y = augment.band_limit(x, SR, "cheap_mic")
    gain_db = lambda lo, hi: 10 * np.log10(_band_power(y, lo, hi) / _band_power(x, lo, hi))  # noqa: E731
    assert gain_db(2800, 3200) > gain_db(900, 1100) + 3
    assert gain_db(20, 80) < gain_db(900, 1100) - 10
    assert gain_db(7000, 8000) < gain_db(900, 1100) - 10


def test_band_limit_rejects_unknown_kinds_with_the_list():
    with pytest.raises(ValueError, match="telephone"):
        augment.band_limit(SPEECH, SR, "walkie_talkie")


def test_gain_and_clip():
    np.testing.assert_allclose(augment.gain_db(SPEECH, 20 * np.log10(2)), 2 * SPEECH, rtol=1e-6)
    y = augment.clip(SPEECH, 0.05)
    assert np.max(np.abs(y)) <= 0.05
    quiet = np.abs(SPEECH) < 0.05
    np.testing.assert_array_equal(y[quiet], SPEECH[quiet])


def test_active_rms_ignores_silence():
    padded = np.concatenate([np.zeros(SR, np.float32), SPEECH, np.zeros(SR, np.float32)])
    assert augment.active_rms(padded, SR) == pytest.approx(augment.active_rms(SPEECH, SR), rel=0.01)
    assert _rms(padded) < 0.6 * _rms(SPEECH)
    assert augment.active_rms(np.zeros(SR, np.float32), SR) == 0.0


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
@pytest.mark.parametrize("noise_s", [0.3, 3.0])  # looped and cropped
def test_mix_at_snr_hits_the_requested_snr(snr_db, noise_s):
    noise = np.random.default_rng(1).standard_normal(int(noise_s * SR)).astype(np.float32)
    mix = augment.mix_at_snr(SPEECH, noise, snr_db, SR, np.random.default_rng(2))
    assert mix.dtype == np.float32 and mix.size == SPEECH.size
    added = mix.astype(np.float64) - SPEECH
    assert 20 * np.log10(augment.active_rms(SPEECH, SR) / _rms(added)) == pytest.approx(snr_db, abs=0.5)


def test_mix_at_snr_ignores_leading_silence():
    noise = np.random.default_rng(1).standard_normal(3 * SR).astype(np.float32)
    padded = np.concatenate([np.zeros(SR, np.float32), SPEECH])
    mix = augment.mix_at_snr(padded, noise, 5.0, SR)
    added = mix.astype(np.float64) - padded
    assert 20 * np.log10(augment.active_rms(SPEECH, SR) / _rms(added[SR:])) == pytest.approx(5.0, abs=0.5)
    plain = augment.mix_at_snr(SPEECH, noise, 5.0, SR)
    assert _rms(added) == pytest.approx(_rms(plain - SPEECH), rel=0.06)  # same noise level with or without padding


def test_mix_at_snr_may_exceed_full_scale_and_rejects_silent_speech():
    loud = augment.mix_at_snr(SPEECH * 10, np.ones(100, np.float32), -10.0, SR)
    assert np.max(np.abs(loud)) > 1.0
    with pytest.raises(ValueError, match="silent"):
        augment.mix_at_snr(np.zeros(SR, np.float32), np.ones(SR, np.float32), 0.0, SR)
    unchanged = augment.mix_at_snr(SPEECH, np.zeros(SR, np.float32), 0.0, SR)  # silent noise: nothing to add
    assert unchanged.dtype == np.float32 and np.array_equal(unchanged, SPEECH.astype(np.float32))


def test_equalize_raises_and_lowers_the_bands_it_is_told_to_and_keeps_the_rms():
    x = _tone(454.0) + _tone(3150.0)
    gains = np.zeros(len(augment.EQ_CENTRES_HZ))
    np.testing.assert_allclose(augment.equalize(x, SR, gains), x, atol=1e-5)  # flat: nothing changes
    gains[2], gains[5] = 6.0, -6.0  # +6 dB at 454 Hz, -6 dB at 3150 Hz
    y = augment.equalize(x, SR, gains)
    assert y.dtype == np.float32 and y.size == x.size
    assert _rms(y) == pytest.approx(_rms(x), rel=1e-4)
    ratio_db = 10 * np.log10(_band_power(y, 400, 500) / _band_power(y, 3100, 3200))
    assert ratio_db == pytest.approx(12.0, abs=0.5)
    with pytest.raises(ValueError, match="one gain per centre"):
        augment.equalize(x, SR, [1.0, 2.0])


def test_random_augment_draws_nothing_for_a_step_that_is_off():
    off = augment.AugmentConfig(p_speed=0, p_pitch=0, p_vtlp=0, p_reverb=0, p_gain=0, p_clip=0, p_band_limit=0)
    rng, reference = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(augment.random_augment(SPEECH, SR, rng, off), SPEECH)
    for _ in range(7):  # one coin per step that existed before the equaliser; the equaliser's, off, draws none
        reference.random()
    assert rng.random() == reference.random()
    eq_only = dataclasses.replace(off, p_eq=1.0, eq_gain_range_db=(-6.0, 6.0))
    y = augment.random_augment(SPEECH, SR, np.random.default_rng(3), eq_only)
    assert not np.allclose(y, SPEECH, atol=1e-3) and _rms(y) == pytest.approx(_rms(SPEECH), rel=1e-3)


EVERYTHING = augment.AugmentConfig(p_speed=1, p_pitch=1, p_vtlp=1, p_reverb=1, p_gain=1, p_clip=1, p_band_limit=1,
                                  p_eq=1)


def test_random_augment_is_deterministic_per_seed():
    for config in (augment.AugmentConfig(), EVERYTHING):
        a = augment.random_augment(SPEECH, SR, np.random.default_rng(5), config)
        b = augment.random_augment(SPEECH, SR, np.random.default_rng(5), config)
        np.testing.assert_array_equal(a, b)
    outputs = [augment.random_augment(SPEECH, SR, np.random.default_rng(s), EVERYTHING) for s in range(3)]
    assert not np.allclose(outputs[0][:14000], outputs[1][:14000])


def test_random_augment_runs_every_step():
    for seed in range(5):
        y = augment.random_augment(SPEECH, SR, np.random.default_rng(seed), EVERYTHING)
        assert y.dtype == np.float32 and np.all(np.isfinite(y)) and _rms(y) > 0
        assert round(SR / 1.1) - 1 <= y.size <= round(SR / 0.9) + 1


def test_random_augment_works_at_8khz():
    x = _speech_like(sample_rate=8000)
    for seed in range(3):
        y = augment.random_augment(x, 8000, np.random.default_rng(seed), EVERYTHING)
        assert y.dtype == np.float32 and np.all(np.isfinite(y)) and _rms(y) > 0


def test_random_augment_telephone_only_leaves_nothing_above_4khz():
    config = dataclasses.replace(augment.AugmentConfig(p_speed=0, p_pitch=0, p_vtlp=0, p_reverb=0, p_clip=0),
                                 p_band_limit=1.0, band_limit_kinds=("telephone",), band_limit_weights=(1.0,))
    y = augment.random_augment(SPEECH, SR, np.random.default_rng(0), config)
    assert y.size == SPEECH.size
    assert _band_power(y, 4001, 8001) < 1e-6 * _band_power(y, 0, 8001)


def test_augment_config_validates_with_the_field_name():
    with pytest.raises(ValueError, match="p_reverb"):
        augment.AugmentConfig(p_reverb=1.5)
    with pytest.raises(ValueError, match="speed_range"):
        augment.AugmentConfig(speed_range=(1.1, 0.9))
    with pytest.raises(ValueError, match="band_limit_kinds"):
        augment.AugmentConfig(band_limit_kinds=("radio",), band_limit_weights=(1.0,))
    assert augment.AugmentConfig(speed_range=[0.8, 1.2]).speed_range == (0.8, 1.2)
