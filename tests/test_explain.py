"""explain(): windows as the Recognizer's, τ and zeroed fractions caught by hooks, and the horn-vs-clean property."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import drsn_asr
from drsn_asr.training import noise
from drsn_asr.runtime.audio import read_audio, write_audio
from drsn_asr.runtime.checkpoint import LoadedModel, load_model
from drsn_asr.cli import main
from drsn_asr.runtime.config import FeatureConfig, ModelConfig
from drsn_asr.tools.explain import capture_shrinkage, explain
from drsn_asr.runtime.model import KeywordNet
from drsn_asr.runtime.stream import Recognizer

RATE = 16000
WORD = Path(__file__).resolve().parent / "data" / "fsdd_7_theo_0.wav"  # held-out speaker, CC BY-SA 4.0
WORD_AT_S, HORN_AT_S, TOTAL_S = 1.2, 3.2, 5.5
SPEECH_RMS = 0.05  # the horn comes at noise.TARGET_RMS = 0.1 over its honk: 6 dB above the speech
# validate the horn test against another checkpoint: DRSN_ASR_EXPLAIN_MODEL=path/to/best.pt pytest tests/test_explain.py
HORN_MODEL = os.environ.get("DRSN_ASR_EXPLAIN_MODEL")


def _random_model(block: str) -> LoadedModel:
    torch.manual_seed(0)
    labels = ["yes", "no", "_unknown_", "_silence_"]
    net = KeywordNet(ModelConfig(block=block), FeatureConfig(), len(labels)).eval()
    return LoadedModel(net, labels, FeatureConfig(), {}, block)


def word_and_horn(seed: int = 0) -> tuple[np.ndarray, float, float]:
    """A held-out spoken digit at WORD_AT_S, then one car-horn honk from HORN_AT_S, over a -50 dBFS noise floor.

    Returns (audio, honk start s, honk end s); the honk is where the horn's samples are non-zero.
    """
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(TOTAL_S * RATE)) * 0.003).astype(np.float32)
    word = read_audio(WORD)
    at = int(WORD_AT_S * RATE)
    x[at : at + len(word)] += word / np.sqrt(np.mean(word**2)) * SPEECH_RMS
    horn = noise.car_horn(0.9, RATE, rng, n_honks=1)
    at = int(HORN_AT_S * RATE)
    x[at : at + len(horn)] += horn
    sounding = np.flatnonzero(horn)
    return x, (at + sounding[0]) / RATE, (at + sounding[-1] + 1) / RATE


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: on a busy small machine extra threads mostly wait for each other
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip():
    return word_and_horn()


@pytest.fixture(scope="module")
def default_model():
    return load_model("logmel", device="cpu")  # the log-mel model: frames of 10 ms, bands of a spectrogram


def test_horn_raises_tau_and_zeroed_fraction_of_the_first_shrinkage_unit(clip):
    """The trained model's first shrinkage unit thresholds more, and zeroes more, in windows holding the horn.

    Asserted on the first unit only: it works nearest the spectrogram, where a horn is a burst of strong
    harmonic energy. Deeper units work on evidence for words; with the ablation checkpoints their mean τ rose
    more for the spoken digit than for the horn, so no claim is made about them.
    Horn windows: windows whose 1 s overlaps the honk. Clean windows: no overlap and wholly inside the
    recording (the first second's windows hold the Recognizer's silence padding, which raises τ by itself).
    """
    model = load_model(HORN_MODEL or "logmel", device="cpu")  # a unit over the spectrogram (see above)
    if HORN_MODEL is None and model.training.get("note") == "untrained placeholder":
        pytest.skip("the shipped default model is the untrained placeholder; the property needs the trained one")
    if model.net.config.block not in ("drsn_cw", "drsn_cs"):
        pytest.skip(f"{model.net.config.block} has no shrinkage units")
    x, honk_start_s, honk_end_s = clip
    e = explain(x, model=model, hop_ms=50.0)  # a window every 50 ms, whatever hop the model carries
    window_start_s = e.times_s - e.window_s
    horn = (e.times_s > honk_start_s) & (window_start_s < honk_end_s)
    clean = ~horn & (window_start_s >= 0)
    assert horn.sum() >= 20 and clean.sum() >= 20
    tau, zeroed = e.tau_mean[0], e.zero_fraction[0]
    assert tau[horn].mean() > tau[clean].mean(), (tau[horn].mean(), tau[clean].mean())
    assert zeroed[horn].mean() > zeroed[clean].mean(), (zeroed[horn].mean(), zeroed[clean].mean())


def test_hooks_are_removed_after_explain_and_after_an_error(clip):
    model = _random_model("drsn_cw")
    explain(clip[0][: 2 * RATE], model=model)
    assert all(not m._forward_hooks for m in model.net.modules())
    with pytest.raises(RuntimeError, match="stop"):
        with capture_shrinkage(model.net) as traces:
            model.net(torch.zeros(2, 40, model.net.window_frames))
            assert [len(t["tau"]) for t in traces.values()] == [1, 1, 1]
            raise RuntimeError("stop")
    assert all(not m._forward_hooks for m in model.net.modules())


def test_windows_and_scores_are_the_recognizers(clip, default_model):
    x = clip[0][: 3 * RATE]
    e = explain(x, model=default_model)
    rec = Recognizer(default_model, smoothing_ms=50.0)  # smoothing over one hop: rec.scores is the last posterior
    done = 0
    for i, end_s in enumerate(e.times_s):  # feed up to each window's end: exactly one classification each
        end = round(end_s * RATE)
        rec.feed(x[done:end])
        done = end
        assert rec.n_classifications == i + 1 and rec.time_s == pytest.approx(end_s)
        assert np.allclose(list(rec.scores.values()), e.scores[i], atol=1e-4)
    assert len(x) - done < round(e.hop_ms / 1000 * RATE)  # no window left out at the end
    n_frames = default_model.features.n_frames(len(x))
    assert e.logmel.shape == (40, n_frames) and len(e.frame_times_s) == n_frames
    assert e.detections == tuple(drsn_asr.transcribe(x, model=default_model))


def test_per_unit_shapes_cw_and_cs():
    x = np.random.default_rng(1).standard_normal(2 * RATE).astype(np.float32) * 0.1
    for block, widths in (("drsn_cw", [24, 40, 56]), ("drsn_cs", [1, 1, 1])):
        e = explain(x, model=_random_model(block))
        n = len(e.times_s)
        assert e.scores.shape == (n, 4)
        assert e.unit_names == ("units.0.branch_end", "units.1.branch_end", "units.2.branch_end")
        assert [t.shape for t in e.tau] == [(n, w) for w in widths]
        for tau, mean, zeroed in zip(e.tau, e.tau_mean, e.zero_fraction):
            assert np.allclose(mean, tau.mean(axis=1)) and (tau >= 0).all()
            assert zeroed.shape == (n,) and ((zeroed > 0) & (zeroed < 1)).all()


@pytest.mark.parametrize("block", ["resnet", "se_resnet"])
def test_models_without_shrinkage_give_empty_unit_lists(block):
    e = explain(np.zeros(RATE, np.float32), model=_random_model(block))
    assert e.unit_names == e.tau == e.tau_mean == e.zero_fraction == ()
    assert e.scores.shape == (len(e.times_s), 4)


def test_a_file_gives_what_its_samples_give(tmp_path, clip, default_model):
    x = np.round(clip[0][: 3 * RATE] * 32768).astype(np.int16)  # exactly what a 16-bit file holds
    write_audio(tmp_path / "a.wav", x.astype(np.float32) / 32768)
    a, b = explain(tmp_path / "a.wav", model=default_model), explain(x, model=default_model)
    for field in ("times_s", "scores", "logmel", "frame_times_s"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.detections == b.detections
    assert all(np.array_equal(p, q) for p, q in zip(a.tau, b.tau))
    a, b = (explain(source, model=default_model, start_s=0.5, end_s=1.0) for source in (tmp_path / "a.wav", x))
    assert np.array_equal(a.scores, b.scores) and a.detections == b.detections


def test_start_and_end_crop_to_the_windows_and_frames_inside(clip, default_model):
    x = clip[0]
    whole = explain(x, model=default_model)
    part = explain(x, model=default_model, start_s=2.0, end_s=4.0)
    inside = (whole.times_s >= 2.0) & (whole.times_s <= 4.0)
    assert np.allclose(part.times_s, whole.times_s[inside])
    assert np.allclose(part.scores, whole.scores[inside], atol=1e-5)
    for p, w in zip(part.zero_fraction, whole.zero_fraction):
        assert np.allclose(p, w[inside], atol=1e-5)
    half_frame_s = FeatureConfig().window_ms / 2000  # frames wholly inside the span
    frames = (whole.frame_times_s - half_frame_s >= 2.0 - 1e-9) & (whole.frame_times_s + half_frame_s <= 4.0 + 1e-9)
    assert np.allclose(part.frame_times_s, whole.frame_times_s[frames])
    assert np.allclose(part.logmel, whole.logmel[:, frames], atol=1e-4)
    assert set(part.detections) <= set(whole.detections)
    with pytest.raises(ValueError, match="no classification window"):
        explain(x, model=default_model, start_s=6.0)
    with pytest.raises(ValueError, match="start_s < end_s"):
        explain(x, model=default_model, start_s=3.0, end_s=2.0)


def test_cli_writes_a_png_and_an_html_page(tmp_path, clip, capsys):
    pytest.importorskip("matplotlib")
    write_audio(tmp_path / "street.wav", clip[0])
    png, page = tmp_path / "r.png", tmp_path / "r.html"
    assert main(["explain", str(tmp_path / "street.wav"), "--out", str(png), "--device", "cpu"]) == 0
    assert main(["explain", str(tmp_path / "street.wav"), "--out", str(page), "--device", "cpu", "--start", "1",
                 "--end", "4", "--compare", "default"]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    text = page.read_text()
    assert "data:image/png;base64,iVBORw0KGgo" in text and "<table>" in text and "mean τ" in text
    assert main(["explain", str(tmp_path / "street.wav"), "--out", str(tmp_path / "r.jpg")]) == 2
    assert "wrote" in capsys.readouterr().out
