"""The streaming Recognizer: chunking invariance, detection rule, input rules, callbacks."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import drsn_asr
import drsn_asr.tools.evaluate  # a submodule the package does not import itself
from drsn_asr.runtime.checkpoint import build_model
from drsn_asr.runtime.config import FeatureConfig, ModelConfig, to_dict
from drsn_asr.runtime.model import KeywordNet
from drsn_asr.runtime.stream import Detection, Recognizer

LABELS = ["yes", "no", "_unknown_", "_silence_"]


class LoudIsYes(KeywordNet):
    """A tiny real network whose output we control: 'yes' when the window is loud, '_silence_' otherwise."""

    def forward(self, logmel):
        energy = logmel.exp().sum(dim=1).mean(dim=1)  # mean power per window
        loud = (energy.log() > 1.7).float()  # most of a 0.4 s burst (see _bursts) is in the window
        logits = torch.zeros(len(logmel), 4)
        logits[:, 0] = 10 * loud
        logits[:, 3] = 10 * (1 - loud)
        return logits


def _loud_model():
    net = LoudIsYes(ModelConfig(), FeatureConfig(), 4).eval()
    return drsn_asr.runtime.checkpoint.LoadedModel(net, LABELS, FeatureConfig(), {}, "test")


def _bursts(starts_s, length_s=0.4, total_s=8.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(total_s * 16000)) * 0.001).astype(np.float32)
    for s in starts_s:
        a = int(s * 16000)
        x[a : a + int(length_s * 16000)] += (rng.standard_normal(int(length_s * 16000)) * 0.3).astype(np.float32)
    return x


def _feed_in_chunks(rec, x, sizes):
    out, pos, i = [], 0, 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        out += rec.feed(x[pos : pos + n])
        pos, i = pos + n, i + 1
    return out + rec.flush()


def test_one_detection_per_word_at_the_right_time():
    x = _bursts([1.0, 3.0, 5.5])
    dets = drsn_asr.transcribe(x, model=_loud_model())
    assert [d.label for d in dets] == ["yes", "yes", "yes"]
    for d, start in zip(dets, [1.0, 3.0, 5.5]):
        assert abs(d.start_s - start) < 0.1
        assert abs(d.end_s - (start + 0.4)) < 0.15


@pytest.mark.parametrize("sizes", [[1], [137], [16000], [10**7], [5, 3000, 17]])
def test_chunking_does_not_change_detections(sizes):
    x = _bursts([0.5, 2.0, 4.2, 6.0])
    reference = drsn_asr.transcribe(x, model=_loud_model())
    if sizes == [1]:
        x = x[: 16000 * 3]
        reference = drsn_asr.transcribe(x, model=_loud_model())
    rec = Recognizer(_loud_model())
    assert _feed_in_chunks(rec, x, sizes) == reference
    assert len(reference) >= 2


def test_chunking_invariance_with_real_network_and_resampling():
    from pathlib import Path

    from drsn_asr.runtime.audio import read_audio, resample

    demo = Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac"
    x = resample(read_audio(demo)[: 16000 * 12], 16000, 48000)  # real speech in street noise, declared 48 kHz
    options = dict(threshold=0.3, refractory_ms=0.0, sample_rate=48000)
    model = drsn_asr.load_model(device="cpu")
    ref = drsn_asr.transcribe(x, model=model, **options)
    got = _feed_in_chunks(Recognizer(model, **options), x, [4801, 333, 48000])
    assert got == ref and len(ref) > 0


def test_unknown_and_silence_never_fire():
    x = np.zeros(16000 * 3, np.float32)
    rec = Recognizer(_loud_model(), threshold=0.0)
    assert rec.feed(x) + rec.flush() == []
    assert rec.scores["_silence_"] > 0.99


def test_refractory_and_rearm():
    x = _bursts([1.0, 1.3], length_s=0.2)  # two bursts close together read as one word
    assert len(drsn_asr.transcribe(x, model=_loud_model())) == 1


def test_per_label_threshold_and_unknown_label_rejected():
    x = _bursts([1.0])
    assert drsn_asr.transcribe(x, model=_loud_model(), thresholds={"yes": 1.01}) == []
    with pytest.raises(ValueError, match="maybe"):
        Recognizer(_loud_model(), thresholds={"maybe": 0.5})
    with pytest.raises(ValueError, match="refractory"):
        Recognizer(_loud_model(), refractory=3)


@pytest.mark.parametrize("hop_ms", [25.0, 5.0, 0.0])
def test_a_hop_that_is_not_whole_frames_is_refused_everywhere_it_is_used(hop_ms):
    # the stream can only classify at 10 ms frame boundaries; 25 ms used to become 20 ms in the stream but
    # stay 25 ms in evaluate's clip scoring, so the two paths disagreed without a word
    with pytest.raises(ValueError, match=r"multiple of 10 ms, e\.g\. hop_ms="):
        Recognizer(_loud_model(), hop_ms=hop_ms)
    with pytest.raises(ValueError, match="multiple of 10 ms"):
        drsn_asr.tools.evaluate.classify_clip(_loud_model(), drsn_asr.runtime.features.LogMel(FeatureConfig()),
                                        _bursts([0.5], total_s=2.0), drsn_asr.runtime.stream.detector_config(hop_ms=hop_ms))
    Recognizer(_loud_model(), hop_ms=30.0)  # whole frames are fine


def test_callback_receives_detections_and_a_raising_callback_does_not_stop_the_stream(caplog):
    got = []

    def callback(d):
        got.append(d)
        raise RuntimeError("app bug")

    rec = Recognizer(_loud_model(), on_detection=callback)
    with caplog.at_level(logging.ERROR):
        returned = _feed_in_chunks(rec, _bursts([1.0, 3.0]), [1600])
    assert got == returned and len(got) == 2
    assert isinstance(got[0], Detection)
    assert "app bug" in caplog.text


def test_reset_forgets_everything():
    rec = Recognizer(_loud_model())
    first = _feed_in_chunks(rec, _bursts([1.0]), [999])
    rec.reset()
    assert rec.time_s == 0
    assert _feed_in_chunks(rec, _bursts([1.0]), [999]) == first


def test_int16_and_float32_give_the_same_detections():
    x = _bursts([1.0, 3.0])
    as_int16 = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    a = drsn_asr.transcribe(x, model=_loud_model())
    b = drsn_asr.transcribe(as_int16, model=_loud_model())
    assert [d.label for d in a] == [d.label for d in b]
    assert all(abs(p.start_s - q.start_s) < 0.02 for p, q in zip(a, b))


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((1600, 2), np.float32), "mono"),
        (np.array([np.nan] * 10, np.float32), "NaN"),
        (np.zeros(10, np.complex64), "dtype"),
        (np.full(1600, 3000.0, np.float32), "integer PCM"),
        ("not audio", "numpy array"),
    ],
)
def test_bad_chunks_are_refused_clearly(bad, match):
    rec = Recognizer(_loud_model())
    with pytest.raises(ValueError, match=match):
        rec.feed(bad)


def test_empty_chunk_is_fine():
    rec = Recognizer(_loud_model())
    assert rec.feed(np.zeros(0, np.float32)) == []


def test_declared_rate_is_resampled():
    x16 = _bursts([1.0, 3.0], total_s=5)
    x48 = drsn_asr.runtime.audio.resample(x16, 16000, 48000)
    a = drsn_asr.transcribe(x16, model=_loud_model())
    b = drsn_asr.transcribe(x48, model=_loud_model(), sample_rate=48000)
    assert [d.label for d in a] == [d.label for d in b]
    assert all(abs(p.start_s - q.start_s) < 0.05 for p, q in zip(a, b))


def test_scores_exposed_for_meters():
    rec = Recognizer(_loud_model())
    rec.feed(_bursts([0.2], total_s=1.0))
    assert set(rec.scores) == set(LABELS)
    assert abs(sum(rec.scores.values()) - 1) < 1e-4


@pytest.mark.parametrize("name, hop_ms", [("logmel", 50.0), ("default", 80.0)])
def test_torch_and_onnxruntime_backends_make_the_same_detections(name, hop_ms):
    from pathlib import Path

    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.runtime.inference import OnnxNet

    x = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")  # 30 s of speech in the street
    model = drsn_asr.load_model(name, device="cpu")  # log-mel network, or the head over speech embeddings
    found = {}
    for backend in ("torch", "onnxruntime"):
        rec = Recognizer(model, backend=backend, threshold=0.3, hop_ms=hop_ms)  # many detections, many windows
        assert isinstance(rec._bank.forward, OnnxNet) == (backend == "onnxruntime")
        found[backend] = _feed_in_chunks(rec, x, [800])  # 50 ms chunks, as from a microphone
        assert rec.scores != {} and rec.n_classifications > 300
    torch_dets, onnx_dets = found["torch"], found["onnxruntime"]
    assert len(torch_dets) >= 10
    assert [(d.label, d.start_s, d.end_s) for d in onnx_dets] == [(d.label, d.start_s, d.end_s) for d in torch_dets]
    assert max(abs(a.score - b.score) for a, b in zip(onnx_dets, torch_dets)) < 1e-3


def test_unknown_backend_and_autocast_on_onnxruntime_are_refused():
    from drsn_asr.runtime.multistream import MultiStreamRecognizer

    with pytest.raises(ValueError, match="backend must be one of"):
        Recognizer(drsn_asr.load_model(device="cpu"), backend="tensorrt")
    with pytest.raises(ValueError, match="autocast runs on the torch backend"):
        MultiStreamRecognizer(drsn_asr.load_model(device="cpu"), autocast="bfloat16", backend="onnxruntime")


def test_a_model_without_its_own_hop_gets_a_whole_number_of_its_frames():
    from drsn_asr.runtime.decision import default_hop_ms
    from drsn_asr.runtime.stream import detector_config

    assert default_hop_ms(10.0) == 50.0  # log-mel: DetectorConfig's 50 ms, as before
    assert default_hop_ms(80.0) == 80.0  # speech-embedding frames
    model = _loud_model()
    assert detector_config(model).hop_ms == 50.0
    assert detector_config(model, hop_ms=100.0).hop_ms == 100.0


class ThreadsSeen(LoudIsYes):
    """LoudIsYes that records torch's intra-op thread count each time it classifies."""

    seen: list[int] = []

    def forward(self, logmel):
        ThreadsSeen.seen.append(torch.get_num_threads())
        return super().forward(logmel)


def test_inference_runs_on_the_recognizers_own_threads_and_the_callers_setting_is_left_alone():
    net = ThreadsSeen(ModelConfig(), FeatureConfig(), 4).eval()
    model = drsn_asr.runtime.checkpoint.LoadedModel(net, LABELS, FeatureConfig(), {}, "test")
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for threads, expected in ((1, 1), (3, 3), (None, 2)):
            ThreadsSeen.seen = []
            rec = Recognizer(model, threads=threads)
            _feed_in_chunks(rec, _bursts([1.0], total_s=3.0), [320])
            assert ThreadsSeen.seen and set(ThreadsSeen.seen) == {expected}
            assert torch.get_num_threads() == 2  # the caller's setting, untouched
    finally:
        torch.set_num_threads(saved)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            Recognizer(model, threads=bad)


def test_a_streamed_embedding_holds_only_the_samples_its_next_frame_reads():
    """After its first frame (a whole window), a stream of the speech embedding keeps only what its next frame
    reads (stream_samples) and is due again one hop later; fed a sample short of that, it only buffers."""
    from drsn_asr.runtime.audio import read_audio

    rec = Recognizer(drsn_asr.load_model("default", device="cpu"))
    bank = rec._bank
    hop, window, reads = bank.hop_samples, bank.window_samples, bank.stream_samples
    assert hop < reads < window
    x = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")[: 5 * window]
    due = bank.samples_until_due(0)
    assert due == window + (bank.hop_frames - 1) * hop
    rec.feed(x[: due - 1])
    assert rec.n_classifications == 0
    rec.feed(x[due - 1 : due])
    assert rec.n_classifications == 1 and bank.pending_len[0] == reads - hop  # not window - hop
    fed = due
    for _ in range(3):
        nxt = bank.samples_until_due(0)
        assert nxt == bank.hop_frames * hop
        rec.feed(x[fed : fed + nxt - 1])
        assert rec.n_classifications == 1 + _
        rec.feed(x[fed + nxt - 1 : fed + nxt])
        fed += nxt
    assert rec.n_classifications == 4 and rec.time_s == pytest.approx(fed / 16000)


def test_feed_buffers_until_a_window_is_due_and_decides_as_if_fed_at_once():
    model = _loud_model()
    rec = Recognizer(model, hop_ms=100.0)
    x = _bursts([1.0, 3.0, 5.0], total_s=7.0)
    due = rec._bank.samples_until_due(0)
    assert due == 400 + 9 * 160  # the first window ends with frame 9 (frames of 400 samples, 160 apart)
    rec.feed(x[: due - 1])
    assert rec.n_classifications == 0 and rec.time_s == 0.0  # only held: nothing computed yet
    rec.feed(x[due - 1 : due])
    assert rec.n_classifications == 1 and rec.time_s == pytest.approx(due / 16000)
    assert rec._bank.samples_until_due(0) == 1600  # then one per hop
    whole = Recognizer(model, hop_ms=100.0)
    expected = whole.feed(x) + whole.flush()
    for sizes in ([160], [320, 512, 1600], [7]):
        got = _feed_in_chunks(Recognizer(model, hop_ms=100.0), x, sizes)
        assert [(d.label, d.start_s, d.end_s, d.score) for d in got] == \
            [(d.label, d.start_s, d.end_s, d.score) for d in expected]
    assert len(expected) == 3
