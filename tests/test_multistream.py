"""MultiStreamRecognizer: every stream detects exactly what a Recognizer fed its audio alone detects."""

import logging

import numpy as np
import pytest
import torch

import drsn_asr
from drsn_asr.runtime.checkpoint import LoadedModel
from drsn_asr.runtime.config import FeatureConfig, ModelConfig
from drsn_asr.runtime.model import KeywordNet
from drsn_asr.runtime.multistream import MultiStreamRecognizer
from drsn_asr.runtime.stream import Recognizer

LABELS = ["yes", "no", "_unknown_", "_silence_"]


class LoudIsYes(KeywordNet):
    """'yes' when the window is loud, 'no' when it is very loud, '_silence_' otherwise."""

    def forward(self, logmel):
        level = logmel.exp().sum(dim=1).mean(dim=1).log()
        logits = torch.zeros(len(logmel), 4)
        logits[:, 0] = 10 * (level > 1.7).float()
        logits[:, 1] = 20 * (level > 2.8).float()
        logits[:, 3] = 5.0
        return logits


def _model():
    return LoadedModel(LoudIsYes(ModelConfig(), FeatureConfig(), 4).eval(), LABELS, FeatureConfig(), {}, "test")


def _bursts(starts_s, total_s=6.0, seed=0, rate=16000, gain=0.3):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(total_s * rate)) * 0.001).astype(np.float32)
    for i, s in enumerate(starts_s):
        a, n = int(s * rate), int(0.4 * rate)
        x[a : a + n] += (rng.standard_normal(n) * gain * (2 if i % 2 else 1)).astype(np.float32)
    return np.clip(x, -1, 1)


def _alone(model, x, sample_rate=16000, **options):
    rec = Recognizer(model, sample_rate=sample_rate, **options)
    return rec.feed(x) + rec.flush()


def _interleaved(multi, signals, seed=0, max_chunk=5000):
    """Feed each stream's signal in random chunk sizes, streams in random order and subsets; then flush."""
    rng = np.random.default_rng(seed)
    pos = {k: 0 for k in signals}
    got = {k: [] for k in signals}
    while any(pos[k] < len(x) for k, x in signals.items()):
        chunks = {}
        for k, x in signals.items():
            if pos[k] < len(x) and rng.random() < 0.7:
                n = int(rng.integers(1, max_chunk))
                chunks[k] = x[pos[k] : pos[k] + n]
                pos[k] += n
        for k, dets in multi.feed(chunks).items():
            got[k] += dets
    for k, dets in multi.flush().items():
        got[k] += dets
    return got


def test_interleaved_random_chunks_equal_each_stream_alone():
    model = _model()
    signals = {"a": _bursts([0.5, 2.0, 4.2]), "b": _bursts([1.0, 3.3], seed=1), "c": _bursts([], seed=2),
               "d": _bursts([0.2, 1.6, 3.0, 4.8], seed=3)}
    multi = MultiStreamRecognizer(model)
    for k in signals:
        multi.add_stream(k)
    got = _interleaved(multi, signals)
    for k, x in signals.items():
        assert got[k] == _alone(model, x), k
    assert sum(len(v) for v in got.values()) >= 8
    rec = Recognizer(model)
    rec.feed(signals["a"]), rec.flush()
    assert multi.time_s("a") == rec.time_s and multi.n_classifications("a") == rec.n_classifications


def test_resampled_stream_equals_its_recognizer():
    model = _model()
    x48 = drsn_asr.runtime.audio.resample(_bursts([1.0, 3.0], total_s=5), 16000, 48000)
    multi = MultiStreamRecognizer(model)
    multi.add_stream("hi", sample_rate=48000)
    multi.add_stream("lo")
    got = _interleaved(multi, {"hi": x48, "lo": _bursts([2.0], total_s=5, seed=4)}, seed=1)
    assert got["hi"] == _alone(model, x48, sample_rate=48000) and len(got["hi"]) >= 2


def test_real_network_streams_equal_recognizers():
    model = drsn_asr.load_model(device="cpu")
    options = dict(threshold=0.3, refractory_ms=0.0)
    from pathlib import Path

    from drsn_asr.runtime.audio import read_audio

    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")  # real speech in noise
    signals = {i: demo[16000 * 10 * i : 16000 * 10 * (i + 1)] for i in range(3)}
    multi = MultiStreamRecognizer(model, **options)
    for k in signals:
        multi.add_stream(k)
    got = _interleaved(multi, signals, seed=2, max_chunk=9000)
    for k, x in signals.items():
        assert got[k] == _alone(model, x, **options) and len(got[k]) > 0
        assert all(d.start_s <= d.end_s <= len(x) / 16000 for d in got[k])  # flush's padding is not stream time


def test_feed_many_lockstep_equals_feed_and_alone():
    model = _model()
    signals = [_bursts([0.3 + 0.7 * i, 3.5], seed=i) for i in range(6)]
    multi = MultiStreamRecognizer(model)
    streams = [multi.add_stream() for _ in signals]
    block = np.stack(signals)
    got = {k: [] for k in streams}
    for start in range(0, block.shape[1], 800):
        for k, dets in multi.feed_many(block[:, start : start + 800]).items():
            got[k] += dets
    for k, dets in multi.flush().items():
        got[k] += dets
    for k, x in zip(streams, signals):
        assert got[k] == _alone(model, x)
    # int16 blocks and a subset of streams in a given order
    multi.reset()
    as_int16 = np.round(block * 32767).astype(np.int16)
    assert multi.feed_many(as_int16[[3, 1]], streams=[streams[3], streams[1]]) is not None
    assert multi.time_s(streams[3]) > 5.9 and multi.time_s(streams[0]) == 0.0


def test_streams_added_and_removed_midway():
    model = _model()
    x, y, z = _bursts([0.5, 2.5, 4.5]), _bursts([1.0, 4.0], seed=1), _bursts([0.5, 2.0], seed=2)
    multi = MultiStreamRecognizer(model)
    multi.add_stream("x")
    multi.add_stream("y")
    half = 3 * 16000
    got_x = multi.feed({"x": x[:half], "y": y[:half]}).get("x", [])
    multi.remove_stream("y")
    assert "y" not in multi and len(multi) == 1
    multi.add_stream("z")  # reuses y's slot: must start fresh
    assert multi.time_s("z") == 0.0 and multi.n_classifications("z") == 0
    out = multi.feed({"x": x[half:], "z": z})
    out_flush = multi.flush()
    got_x += out.get("x", []) + out_flush.get("x", [])
    assert got_x == _alone(model, x)
    assert out.get("z", []) + out_flush.get("z", []) == _alone(model, z)
    assert multi.streams == ["x", "z"]


@pytest.mark.parametrize("max_batch_windows,hop_ms", [(None, 80.0), (1, 80.0), (None, 160.0)])
def test_embedding_streams_that_start_stop_and_reset_at_any_time_each_decide_as_alone(max_batch_windows, hop_ms):
    """The speech embedding keeps per-stream state of its network (each frame from the kept columns): streams
    that join while others run (first frames and continued ones in the same step), at other offsets, a slot
    reused by a new stream, and a reset stream each make the detections of a Recognizer fed their audio alone;
    also when first frames are made a row at a time (max_batch_windows=1), and at a hop of two frames (streams
    at either phase of their hop in one step)."""
    from pathlib import Path

    from drsn_asr.runtime.audio import read_audio

    model = drsn_asr.load_model("default", device="cpu")
    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")  # real speech in noise
    signals = {k: demo[16000 * a : 16000 * b] for k, a, b in (("x", 0, 24), ("y", 5, 17), ("z", 12, 30), ("w", 20, 36))}
    options = dict(threshold=0.3, refractory_ms=0.0, hop_ms=hop_ms)
    multi = MultiStreamRecognizer(model, max_batch_windows=max_batch_windows, **options)
    got, pos = {k: [] for k in signals}, {k: 0 for k in signals}

    def feed(sizes):
        chunks = {k: signals[k][pos[k] : pos[k] + n] for k, n in sizes.items()}
        for k, n in sizes.items():
            pos[k] += n
        for k, dets in multi.feed(chunks).items():
            got[k] += dets

    multi.add_stream("x")
    multi.add_stream("y")
    for i in range(60):  # x and y make their first frames in the same step, then y runs ahead of x
        feed({"x": 700, "y": 700 if i < 20 else 1100})
    multi.add_stream("z")  # joins while x and y have frames: its first ones share steps with their next ones
    for _ in range(50):
        feed({"x": 1280, "y": 1280, "z": 1280})
    got["y"] += multi.flush(["y"]).get("y", [])
    y_fed = pos["y"]
    multi.remove_stream("y")
    multi.add_stream("w")  # takes y's slot and its rows of network state: it must start from its own first window
    multi.reset("x")  # and x starts over from here
    x_from, got["x"] = pos["x"], []
    while pos["x"] < len(signals["x"]):
        feed({"x": 1600, "z": 1600, "w": 1600})
    for k, dets in multi.flush().items():
        got[k] += dets
    assert got["x"] == _alone(model, signals["x"][x_from:], **options)
    assert got["y"] == _alone(model, signals["y"][:y_fed], **options)
    assert got["z"] == _alone(model, signals["z"], **options)
    assert got["w"] == _alone(model, signals["w"], **options)
    assert all(got.values()) and sum(map(len, got.values())) >= 10


def test_reset_of_one_stream_leaves_the_others_alone():
    model = _model()
    x, y = _bursts([0.5, 2.5, 4.5]), _bursts([1.0, 4.0], seed=1)
    multi = MultiStreamRecognizer(model)
    multi.add_stream("x")
    multi.add_stream("y")
    half = 2 * 16000 + 123
    got_y = multi.feed({"x": x[:half], "y": y[:half]}).get("y", [])
    multi.reset("x")
    assert multi.time_s("x") == 0.0 and multi.time_s("y") > 2.0
    out, out_flush = multi.feed({"x": x[half:], "y": y[half:]}), multi.flush()
    assert got_y + out.get("y", []) + out_flush.get("y", []) == _alone(model, y)
    assert out.get("x", []) + out_flush.get("x", []) == _alone(model, x[half:])


def test_callback_gets_stream_and_detection_and_errors_are_logged(caplog):
    seen = []

    def callback(stream, detection):
        seen.append((stream, detection.label))
        raise RuntimeError("app bug")

    multi = MultiStreamRecognizer(_model(), on_detection=callback)
    multi.add_stream("s")
    with caplog.at_level(logging.ERROR):
        returned = multi.feed({"s": _bursts([1.0])}).get("s", []) + multi.flush().get("s", [])
    assert seen == [("s", d.label) for d in returned] and len(seen) == 1
    assert "app bug" in caplog.text
    assert set(multi.scores("s")) == set(LABELS)


def test_clear_errors():
    multi = MultiStreamRecognizer(_model())
    multi.add_stream("a")
    multi.add_stream("r", sample_rate=8000)
    with pytest.raises(ValueError, match="already exists"):
        multi.add_stream("a")
    with pytest.raises(ValueError, match="no stream 'b'"):
        multi.feed({"b": np.zeros(10, np.float32)})
    with pytest.raises(ValueError, match="one row per stream"):
        multi.feed_many(np.zeros((3, 10), np.float32))
    with pytest.raises(ValueError, match="not at the model's rate"):
        multi.feed_many(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="integer PCM"):
        multi.feed({"a": np.full(100, 300.0, np.float32)})
    with pytest.raises(ValueError, match="autocast"):
        MultiStreamRecognizer(_model(), autocast="int8")
    with pytest.raises(ValueError, match="maybe"):
        MultiStreamRecognizer(_model(), thresholds={"maybe": 0.5})


@pytest.mark.parametrize("name", ["default", "logmel"])
def test_the_decision_rule_on_the_device_decides_as_the_host_rule(name):
    """The device rule (torch, run here on the CPU) in a bank of real streams, with the carried per-label
    thresholds and context check, per-stream thresholds, ragged feeds and lockstep blocks: the host rule's
    detections, to the digit."""
    from pathlib import Path

    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.runtime.decision import DeviceDecisionRule

    model = drsn_asr.load_model(name, device="cpu")
    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")  # real speech in noise
    signals = {i: demo[16000 * 12 * i : 16000 * 12 * (i + 1)] for i in range(3)}
    got, multis = {}, {}
    for device_rule in (False, True):
        multi = multis[device_rule] = MultiStreamRecognizer(model, device_rule=device_rule, sensitivity="find_everything")
        assert isinstance(multi._bank.rule, DeviceDecisionRule) == device_rule
        for k in signals:
            multi.add_stream(k, thresholds={"stop": 0.99} if k == 1 else None)
        got[device_rule] = _interleaved(multi, signals, seed=4, max_chunk=9000)
        multi.reset()
        block = np.stack(list(signals.values()))
        for start in range(0, block.shape[1], 1280):
            for k, dets in multi.feed_many(block[:, start : start + 1280]).items():
                got[device_rule][k] += dets
    assert got[True] == got[False]
    for k in signals:
        assert multis[True].scores(k) == multis[False].scores(k)
        assert multis[True].n_classifications(k) == multis[False].n_classifications(k) > 50  # 12 s at a 100-160 ms hop
    assert sum(len(v) for v in got[True].values()) >= 10


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streams_equal_cuda_recognizers_and_cpu_labels():
    options = dict(threshold=0.0, refractory_ms=0.0)
    rng = np.random.default_rng(7)
    signals = {i: (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32) for i in range(4)}
    gpu = drsn_asr.load_model(device="cuda")
    multi = MultiStreamRecognizer(gpu, **options)
    for k in signals:
        multi.add_stream(k)
    got = _interleaved(multi, signals, seed=3)
    cpu = drsn_asr.load_model(device="cpu")
    for k, x in signals.items():
        assert got[k] == _alone(gpu, x, **options)
        assert [d.label for d in got[k]] == [d.label for d in _alone(cpu, x, **options)]
    # the decision rule on the GPU (the default there) decides as the host's; int16 blocks convert there alike
    host = MultiStreamRecognizer(gpu, device_rule=False, **options)
    for k in signals:
        host.add_stream(k)
    assert _interleaved(host, signals, seed=3) == got
    block = np.round(np.stack(list(signals.values())) * 32767).astype(np.int16)
    found = []
    for rec in (multi, host):
        rec.reset()
        found.append({})
        for part in (rec.feed_many(block), rec.flush()):
            for k, dets in part.items():
                found[-1].setdefault(k, []).extend(dets)
    assert found[0] == found[1] and found[0]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_feed_many_refuses_bad_blocks_and_keeps_the_streams_state(device):
    """A NaN, an infinity or integer-scaled floats anywhere in the block: refused before any stream moves."""
    multi = MultiStreamRecognizer(drsn_asr.load_model(device=device))
    for k in range(3):
        multi.add_stream(k)
    good = (np.random.default_rng(0).standard_normal((3, 16000)) * 0.1).astype(np.float32)  # frames of any frontend
    multi.feed_many(good)
    before = [multi.time_s(k) for k in range(3)]
    for bad, message in ((np.nan, "NaN"), (np.inf, "NaN"), (300.0, "integer PCM")):
        block = good.copy()
        block[2, 7] = bad
        with pytest.raises(ValueError, match=message):
            multi.feed_many(block)
        assert [multi.time_s(k) for k in range(3)] == before
    multi.feed_many(good)
    assert all(multi.time_s(k) > t for k, t in zip(range(3), before))


def test_autocast_path_runs_on_cpu():
    """The GPU's reduced-precision path, exercised with CPU autocast (bfloat16): it runs and finds the words."""
    x = _bursts([1.0, 3.0])
    multi = MultiStreamRecognizer(_model(), autocast="bfloat16")
    multi.add_stream("s")
    found = multi.feed({"s": x}).get("s", []) + multi.flush().get("s", [])
    assert [d.label for d in found] == [d.label for d in _alone(_model(), x)]


def test_a_stream_with_its_own_thresholds_decides_as_a_recognizer_with_them():
    model = _model()
    signals = {"all": _bursts([0.5, 2.0, 3.5], seed=1), "no_only": _bursts([0.5, 2.0, 3.5], seed=1),
               "strict": _bursts([1.0, 4.0], seed=2)}
    own = {"no_only": {"yes": 2.0}, "strict": {"yes": 0.99, "no": 0.99}}
    multi = MultiStreamRecognizer(model, threshold=0.5)
    for k in signals:
        multi.add_stream(k, thresholds=own.get(k))
    got = _interleaved(multi, signals, seed=3)
    for k, x in signals.items():
        expected = _alone(model, x, threshold=0.5, thresholds=own.get(k, {}))
        assert [(d.label, d.end_s) for d in got[k]] == [(d.label, d.end_s) for d in expected], k
    assert {d.label for d in got["all"]} == {"yes", "no"}
    assert {d.label for d in got["no_only"]} == {"no"}  # "yes" above 1 never fires on this stream alone
    with pytest.raises(ValueError, match="unknown labels"):
        multi.add_stream("bad", thresholds={"maybe": 0.5})
