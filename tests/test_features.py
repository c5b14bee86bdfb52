import numpy as np
import pytest
import torch

from drsn_asr.runtime.config import FeatureConfig
from drsn_asr.runtime.features import LogMel, StreamingLogMel


def _audio(n=16000 * 2 + 123, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(n, generator=g)).float()


def test_shape_and_frame_count():
    frontend = LogMel()
    x = _audio()
    out = frontend(x)
    c = frontend.config
    assert out.shape == (40, 1 + (len(x) - c.window_samples) // c.hop_samples)
    assert c.window_samples == 400 and c.hop_samples == 160


def test_tone_lands_in_the_right_mel_band():
    frontend = LogMel()
    t = torch.arange(16000) / 16000
    low = frontend(torch.sin(2 * torch.pi * 300 * t)).mean(1).argmax()
    high = frontend(torch.sin(2 * torch.pi * 3000 * t)).mean(1).argmax()
    assert high > low + 10


def test_silence_value_is_the_floor():
    frontend = LogMel()
    out = frontend(torch.zeros(4000))
    assert torch.allclose(out, torch.full_like(out, frontend.silence_value))


@pytest.mark.parametrize("chunks", [[1] * 2000, [137], [1600], [160], [399, 1, 7000], [100000]])
def test_incremental_frames_equal_batch(chunks):
    frontend = LogMel()
    x = _audio()
    batch = frontend(x)
    stream = StreamingLogMel(frontend)
    pieces, pos, i = [], 0, 0
    while pos < len(x):
        size = chunks[i % len(chunks)]
        pieces.append(stream.feed(x[pos : pos + size]))
        pos += size
        i += 1
    streamed = torch.cat(pieces, dim=1)
    assert streamed.shape == batch.shape
    assert stream.n_frames_emitted == batch.shape[1]
    assert torch.allclose(streamed, batch, atol=1e-5, rtol=0)


def test_reset_starts_a_new_stream():
    frontend = LogMel()
    stream = StreamingLogMel(frontend)
    stream.feed(_audio(1000, seed=1))
    stream.reset()
    x = _audio(5000)
    assert torch.allclose(stream.feed(x), frontend(x), atol=1e-5)


def test_configurable_hop_and_window():
    c = FeatureConfig(hop_ms=20, window_ms=30, n_mels=64)
    out = LogMel(c)(_audio(16000))
    assert out.shape == (64, 1 + (16000 - 480) // 320)


def test_window_longer_than_fft_is_refused():
    with pytest.raises(ValueError, match="n_fft"):
        LogMel(FeatureConfig(window_ms=40, n_fft=512))


def test_stays_float32_inside_a_mixed_precision_region():
    """Training wraps frontend and model in one autocast: the log-mel must not follow it into low precision."""
    x = _audio() * 30  # clipped-loud speech: frame power far above float16's 65504
    plain = LogMel()(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = LogMel()(x)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_gpu_and_matches_cpu():
    x = _audio()
    cpu = LogMel()(x)
    gpu = LogMel().cuda()(x.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.float16):
        mixed = LogMel().cuda()(30 * x.cuda()).cpu()
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, LogMel()(30 * x), atol=1e-3)


def test_remove_dc_offset_makes_features_blind_to_a_constant_and_stays_streamable():
    x = _audio()
    plain = LogMel(FeatureConfig())
    blind = LogMel(FeatureConfig(remove_dc_offset=True))
    offset = x + 0.05
    # Without removal the offset leaks through the window into the lowest bands; with it, nothing changes.
    assert (plain(offset) - plain(x))[:3].abs().max() > 0.5
    assert torch.allclose(blind(offset), blind(x), atol=1e-3)
    # Removal only touches the lowest bands of offset-free audio (each frame's mean is tiny there).
    assert (blind(x) - plain(x))[10:].abs().max() < 1e-2
    stream = StreamingLogMel(blind)
    pieces = [stream.feed(chunk) for chunk in torch.split(offset, 777)]
    assert torch.allclose(torch.cat(pieces, dim=1), blind(offset), atol=1e-5)


def test_numpy_log_mel_equals_the_torch_module():
    frontend = LogMel(FeatureConfig())
    rng = np.random.default_rng(3)
    for shape in [(1199,), (2, 4000), (3, 1, 400)]:  # one hop, a batch, exactly one frame
        audio = (0.1 * rng.standard_normal(shape) + 0.02).astype(np.float32)  # with a DC offset to remove
        expected = frontend(torch.from_numpy(audio)).numpy()
        got = frontend.numpy(audio)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("n_fft, f_min, f_max, n_mels, rate", [(512, 20.0, 7600.0, 40, 16000), (512, 0.0, 8000.0, 64, 16000),
                                                               (400, 50.0, 4000.0, 32, 8000)])
def test_mel_filterbank_is_torchaudios_without_torchaudio(n_fft, f_min, f_max, n_mels, rate):
    from drsn_asr.runtime.features import mel_filterbank

    AF = pytest.importorskip("torchaudio.functional")  # the port's reference: only in development installs
    expected = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, rate, norm="slaney", mel_scale="slaney")
    assert torch.equal(mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, rate), expected)
