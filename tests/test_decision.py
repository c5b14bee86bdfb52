"""The vectorized decision rule against a plain one-stream transcription of its definition (decision.py's docstring)."""

import math

import numpy as np
import pytest
import torch

from drsn_asr.runtime.config import DetectorConfig
from drsn_asr.runtime.decision import TIME_TOLERANCE_MS, DecisionRule, DeviceDecisionRule

LABELS = ["yes", "no", "stop", "_unknown_", "_silence_"]


def reference(config: DetectorConfig, smooth_n: int, times_s, probs) -> list[tuple[int, int, float]]:
    """(classification index, label, peak score) of each emitted detection of one stream."""
    thresholds = np.array([config.thresholds.get(label, config.threshold) for label in LABELS], np.float32)
    keyword = [not label.startswith("_") for label in LABELS]
    recent, armed, last_s, pending, out = [], [True] * len(LABELS), -math.inf, None, []
    near, far = (round(ms / config.hop_ms) for ms in config.before_span_ms)
    for i, (now_s, p) in enumerate(zip(times_s, probs)):
        recent = (recent + [p])[-smooth_n:]
        smoothed = recent[0].copy()
        for q in recent[1:]:
            smoothed += q
        smoothed /= np.float32(len(recent))
        armed = [a or s < t / 2 for a, s, t in zip(armed, smoothed, thresholds)]
        if pending is not None:
            label, peak, since_s = pending
            if smoothed[label] > peak and (now_s - since_s) * 1000 < config.peak_wait_ms - TIME_TOLERANCE_MS:
                pending = (label, smoothed[label], since_s)
            else:
                back = [j for j in range(i - far, i - near + 1) if j >= 0]  # the context check
                before = sum(float(probs[j][LABELS.index("_unknown_")]) for j in back) / max(len(back), 1)
                if before <= config.unknown_before_max:
                    out.append((i, label, float(peak)))
                    last_s = now_s
                pending = None
            continue
        best = max((k for k in range(len(LABELS)) if keyword[k]), key=lambda k: (smoothed[k], -k))
        if (smoothed[best] >= thresholds[best] and smoothed[best] >= smoothed.max() and armed[best]
                and (now_s - last_s) * 1000 >= config.refractory_ms - TIME_TOLERANCE_MS):
            armed[best] = False
            pending = (best, smoothed[best], now_s)
    return out


@pytest.mark.parametrize("seed, unknown_before_max", [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (4, 0.3), (5, 0.2)])
def test_vectorized_rule_equals_the_definition_for_streams_stepped_in_any_groups(seed, unknown_before_max):
    rng = np.random.default_rng(seed)
    config = DetectorConfig(threshold=0.6, thresholds={"no": 0.45}, refractory_ms=300.0, peak_wait_ms=150.0,
                            unknown_before_max=unknown_before_max, before_span_ms=(200.0, 500.0))
    smooth_n, n_streams, n_steps = 3, 4, 400
    # posteriors that often spike towards one label, so that detections, waits and re-arms all happen
    probs = rng.dirichlet(np.full(len(LABELS), 0.3), size=(n_streams, n_steps)).astype(np.float32)
    times_s = 0.1 * np.arange(1, n_steps + 1) + rng.uniform(0, 5, size=(n_streams, 1))
    rule = DecisionRule(LABELS, config, n_streams)
    assert rule.smooth_n == smooth_n  # 150 ms of 50 ms hops
    got = {s: [] for s in range(n_streams)}
    done = np.zeros(n_streams, np.int64)
    while (done < n_steps).any():
        live = np.flatnonzero(done < n_steps)
        slots = np.sort(rng.choice(live, rng.integers(1, len(live) + 1), replace=False))
        rows, labels, peaks = rule.step(slots, times_s[slots, done[slots]], probs[slots, done[slots]])
        for row, label, peak in zip(rows, labels, peaks):
            got[int(slots[row])].append((int(done[slots[row]]), int(label), float(peak)))
        done[slots] += 1
    for s in range(n_streams):
        expected = reference(config, smooth_n, times_s[s], probs[s])
        assert got[s] == expected
        assert len(expected) >= 5 and {label for _, label, _ in expected} >= {0, 1}
        if unknown_before_max < 1:  # the context check dropped some
            unchecked = DetectorConfig(**{**config.__dict__, "unknown_before_max": 1.0})
            assert len(reference(unchecked, smooth_n, times_s[s], probs[s])) > len(expected)


def _run(config: DetectorConfig, probs: np.ndarray) -> list[tuple[int, int]]:
    rule = DecisionRule(LABELS, config, 1)
    out = []
    for i, p in enumerate(probs):
        rows, labels, _ = rule.step(np.zeros(1, np.int64), np.array([0.08 * (i + 1)]), p[None].astype(np.float32))
        out += [(i, int(label)) for label in labels]
    return out


def test_the_context_check_drops_a_keyword_that_comes_out_of_other_speech_and_keeps_one_said_alone():
    speech, street, keyword = (np.eye(len(LABELS))[k] * 0.9 + 0.02 for k in (3, 4, 0))
    config = DetectorConfig(hop_ms=80.0, smoothing_ms=80.0, threshold=0.6, peak_wait_ms=0.0, refractory_ms=600.0)
    strict = DetectorConfig(**{**config.__dict__, "unknown_before_max": 0.5})
    in_sentence = np.stack([speech] * 20 + [keyword] * 3 + [speech] * 5)
    alone = np.stack([street] * 20 + [keyword] * 3 + [street] * 5)
    assert _run(config, in_sentence) == [(21, 0)] and _run(config, alone) == [(21, 0)]  # off: both fire
    assert _run(strict, in_sentence) == [] and _run(strict, alone) == [(21, 0)]
    assert _run(strict, np.stack([keyword] * 3 + [street] * 5)) == [(1, 0)]  # at the stream's start: no speech before
    # a dropped detection holds nothing back: the same word said alone after a pause fires at once
    later = np.stack([speech] * 20 + [keyword] * 3 + [street] * 17 + [keyword] * 3)
    assert _run(strict, later) == [(41, 0)]


def _random_streams(rng: np.random.Generator, unknown_before_max: float, peak_wait_ms: float, n_streams: int,
                    n_steps: int) -> tuple[DetectorConfig, np.ndarray, np.ndarray]:
    """A rule's settings (150 ms of smoothing, label 'no' with its own threshold) and random posteriors and stream
    times (n_streams, n_steps) that often spike towards one label, so that detections, waits and re-arms happen."""
    config = DetectorConfig(threshold=0.6, thresholds={"no": 0.45}, refractory_ms=300.0, peak_wait_ms=peak_wait_ms,
                            unknown_before_max=unknown_before_max, before_span_ms=(200.0, 500.0), smoothing_ms=150.0)
    probs = rng.dirichlet(np.full(len(LABELS), 0.3), size=(n_streams, n_steps)).astype(np.float32)
    times_s = 0.1 * np.arange(1, n_steps + 1) + rng.uniform(0, 5, size=(n_streams, 1))
    return config, probs, times_s


@pytest.mark.parametrize("seed, unknown_before_max, peak_wait_ms", [(0, 1.0, 150.0), (1, 0.3, 150.0), (2, 0.25, 0.0)])
def test_a_single_stream_steps_in_scalars_as_the_rows_do_bit_for_bit(seed, unknown_before_max, peak_wait_ms):
    """step() of one slot takes its scalar path: the same decisions and state as the vectorized rows'."""
    rng = np.random.default_rng(seed)
    n_streams, n_steps = 3, 400
    config, probs, times_s = _random_streams(rng, unknown_before_max, peak_wait_ms, n_streams, n_steps)
    scalar, rows = DecisionRule(LABELS, config, n_streams), DecisionRule(LABELS, config, n_streams)
    for rule in (scalar, rows):
        rule.set_thresholds(np.array([2]), {0: 0.5, 2: 0.9})  # one stream with its own
    emitted = {"scalar": [], "rows": []}
    for i in range(n_steps):
        for s in rng.permutation(n_streams):
            slot = np.array([s])
            for name, step in (("scalar", scalar.step), ("rows", rows._step_rows)):
                r, labels, peaks = step(slot, times_s[s, i : i + 1], probs[s, i : i + 1])
                assert r.dtype == np.int64 and labels.dtype == np.int64 and peaks.dtype == np.float32
                emitted[name] += [(int(s), i, int(label), float(peak)) for label, peak in zip(labels, peaks)]
    for name in ("recent", "scores", "n_classifications", "armed", "last_detection_s", "pending_label", "pending_peak",
                 "pending_since_s", "unknown_ring"):
        np.testing.assert_array_equal(getattr(scalar, name), getattr(rows, name), err_msg=name)
    assert emitted["scalar"] == emitted["rows"]
    assert len(emitted["rows"]) >= 5 * n_streams


CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])


@pytest.mark.parametrize("on", ["cpu", CUDA])
@pytest.mark.parametrize("seed, unknown_before_max, peak_wait_ms", [(0, 1.0, 150.0), (1, 0.3, 150.0), (2, 0.25, 0.0)])
def test_the_device_rule_decides_as_the_host_rule_bit_for_bit(seed, unknown_before_max, peak_wait_ms, on):
    rng = np.random.default_rng(seed)
    n_streams, n_steps = 6, 300
    config, probs, times_s = _random_streams(rng, unknown_before_max, peak_wait_ms, n_streams, n_steps)
    host = DecisionRule(LABELS, config, 2)
    device = DeviceDecisionRule(LABELS, config, 2, on)
    for rule in (host, device):
        rule.grow(n_streams)  # grown rows start reset, as the first ones
        rule.set_thresholds(np.array([1, 4]), {0: 0.5, 2: 0.9})  # two streams with their own
    done = np.zeros(n_streams, np.int64)
    emitted = {"host": [], "device": []}
    while (done < n_steps).any():
        live = np.flatnonzero(done < n_steps)
        slots = np.sort(rng.choice(live, rng.integers(1, len(live) + 1), replace=False))
        if rng.random() < 0.01:
            for rule in (host, device):
                rule.reset(slots[:1])
        now_s, p = times_s[slots, done[slots]], probs[slots, done[slots]]
        rows, labels, peaks = host.step(slots, now_s, p)
        emitted["host"] += [(int(slots[r]), int(done[slots[r]]), int(l), float(k)) for r, l, k in zip(rows, labels, peaks)]
        emit, label, peak = (t.cpu() for t in device.step(*(torch.from_numpy(a).to(on) for a in (slots, now_s, p))))
        emitted["device"] += [(int(slots[r]), int(done[slots[r]]), int(label[r]), float(peak[r]))
                              for r in emit.nonzero()[:, 0].tolist()]
        done[slots] += 1
        np.testing.assert_array_equal(device.scores.cpu().numpy(), host.scores)
        np.testing.assert_array_equal(device.armed.cpu().numpy(), host.armed)
        np.testing.assert_array_equal(device.pending_label.cpu().numpy(), host.pending_label)
    assert emitted["device"] == emitted["host"]
    assert len(emitted["host"]) >= 5 * n_streams
