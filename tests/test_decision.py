"""The vectorized decision rule against a plain one-stream transcription of its definition (decision.py's docstring)."""

import math

import numpy as np
import pytest

from drsn_asr.runtime.config import DetectorConfig
from drsn_asr.runtime.decision import TIME_TOLERANCE_MS, DecisionRule

LABELS = ["yes", "no", "stop", "_unknown_", "_silence_"]


def reference(config: DetectorConfig, smooth_n: int, times_s, probs) -> list[tuple[int, int, float]]:
    """(classification index, label, peak score) of each emitted detection of one stream."""
    thresholds = np.array([config.thresholds.get(label, config.threshold) for label in LABELS], np.float32)
    keyword = [not label.startswith("_") for label in LABELS]
    recent, armed, last_s, pending, out = [], [True] * len(LABELS), -math.inf, None, []
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
                out.append((i, label, float(peak)))
                pending, last_s = None, now_s
            continue
        best = max((k for k in range(len(LABELS)) if keyword[k]), key=lambda k: (smoothed[k], -k))
        if (smoothed[best] >= thresholds[best] and smoothed[best] >= smoothed.max() and armed[best]
                and (now_s - last_s) * 1000 >= config.refractory_ms - TIME_TOLERANCE_MS):
            armed[best] = False
            pending = (best, smoothed[best], now_s)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_vectorized_rule_equals_the_definition_for_streams_stepped_in_any_groups(seed):
    rng = np.random.default_rng(seed)
    config = DetectorConfig(threshold=0.6, thresholds={"no": 0.45}, refractory_ms=300.0, peak_wait_ms=150.0)
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
