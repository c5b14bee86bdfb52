import numpy as np
import pytest
import soundfile as sf
import torch

from drsn_asr.runtime.audio import StreamResampler, read_audio, resample, stream_audio, to_float32, write_audio


def _tone(n=16000, rate=16000, f=440.0):
    return (0.5 * np.sin(2 * np.pi * f * np.arange(n) / rate)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_write_then_read_round_trip(tmp_path, suffix):
    x = _tone()
    write_audio(tmp_path / f"a{suffix}", x)
    y = read_audio(tmp_path / f"a{suffix}")
    assert y.dtype == np.float32 and len(y) == len(x)
    tol = 1e-4 if suffix != ".ogg" else 0.05
    assert np.abs(y - x).max() < tol


def test_other_rates_are_resampled(tmp_path):
    x = _tone(48000, 48000, 1000.0)
    sf.write(tmp_path / "a.wav", x, 48000)
    y = read_audio(tmp_path / "a.wav")
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 1000) <= 1  # 1 Hz bins for a 1 s signal


def test_stereo_is_downmixed(tmp_path):
    left, right = _tone(), np.zeros(16000, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000)
    y = read_audio(tmp_path / "s.wav")
    assert np.allclose(y, left / 2, atol=1e-4)


@pytest.mark.parametrize(
    "dtype,full_scale", [(np.int16, 32767), (np.int32, 2**31 - 1), (np.int8, 127), (np.float64, 1.0)]
)
def test_dtypes_converted_explicitly(dtype, full_scale):
    x = np.array([full_scale, 0, -full_scale], dtype=dtype)
    y = to_float32(x)
    assert y.dtype == np.float32
    expected = full_scale / (full_scale + 1) if dtype != np.float64 else 1.0
    assert np.allclose(y, [expected, 0, -expected], atol=1e-6)


def test_uint8_is_offset_binary():
    assert np.allclose(to_float32(np.array([128, 255, 0], np.uint8)), [0, 127 / 128, -1])


def test_torch_tensors_accepted():
    assert np.allclose(to_float32(torch.ones(3)), 1)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.array([0.1, np.nan], np.float32), "NaN"),
        (np.array([0.1, np.inf]), "NaN or infinite"),
        (np.zeros((100, 2), np.float32), "mono"),
        (np.zeros(10, np.complex64), "dtype"),
        ([0.1, 0.2], "numpy array"),
        (b"\x00\x01", "np.frombuffer"),
    ],
)
def test_bad_arrays_say_what_to_do(bad, match):
    with pytest.raises(ValueError, match=match):
        to_float32(bad)


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_audio(tmp_path / "e.wav")


def test_header_only_file(tmp_path):
    sf.write(tmp_path / "h.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="no audio"):
        read_audio(tmp_path / "h.wav")


def test_not_audio(tmp_path):
    (tmp_path / "x.wav").write_text("hello, I am not a wav file" * 10)
    with pytest.raises(ValueError, match="not a readable audio file"):
        read_audio(tmp_path / "x.wav")


def test_truncated_wav(tmp_path):
    write_audio(tmp_path / "t.wav", _tone(16000))
    data = (tmp_path / "t.wav").read_bytes()
    (tmp_path / "t.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        read_audio(tmp_path / "t.wav")


def test_truncated_flac(tmp_path):
    rng = np.random.default_rng(0)
    write_audio(tmp_path / "t.flac", (rng.standard_normal(32000) * 0.1).astype(np.float32))
    data = (tmp_path / "t.flac").read_bytes()
    (tmp_path / "t.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        read_audio(tmp_path / "t.flac")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "nope.wav")


def test_write_is_atomic_and_unknown_suffix_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot write .mp3"):
        write_audio(tmp_path / "a.mp3", _tone())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_resampler_matches_whole_signal(rate):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(rate * 2 + 77) * 0.1).astype(np.float32)
    whole = resample(x, rate, 16000)
    for chunk in (1000, 4097, 333):
        r = StreamResampler(rate, 16000)
        out = [r.feed(x[i : i + chunk]) for i in range(0, len(x), chunk)] + [r.flush()]
        y = np.concatenate(out)
        assert len(y) == len(whole)
        assert np.abs(y - whole).max() < 1e-5


def test_stream_audio_blocks_equal_whole_file(tmp_path):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(44100 * 3) * 0.1).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    whole = read_audio(tmp_path / "a.wav")
    blocks = np.concatenate(list(stream_audio(tmp_path / "a.wav", block_s=0.7)))
    assert len(blocks) == len(whole)
    assert np.abs(blocks - whole).max() < 1e-5


@pytest.mark.parametrize("from_rate, to_rate", [(48000, 16000), (8000, 16000), (44100, 16000), (16000, 22050), (11025, 16000)])
def test_resampling_is_torchaudios_without_torchaudio(from_rate, to_rate):
    from drsn_asr.runtime.audio import resample_tensor

    AF = pytest.importorskip("torchaudio.functional")  # the port's reference: only in development installs
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 12345)).astype(np.float32))
    expected = AF.resample(x, from_rate, to_rate)
    got = resample_tensor(x, from_rate, to_rate)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-4)  # the same kernels; float32 convolutions' rounding
    exact = resample_tensor(x.double(), from_rate, to_rate)
    assert (got - exact).abs().max() <= (expected - exact).abs().max() + 1e-6  # and no further from float64's
