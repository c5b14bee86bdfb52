"""pipelines/stream_eval.py's scoring: hits, substitutions, misses and false alarms (on sentences / on noise)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pipelines"))

from stream_eval import score  # noqa: E402

from drsn_asr.stream import Detection  # noqa: E402

TRUTH = [
    {"label": "yes", "start_s": 1.0, "end_s": 1.5},
    {"label": "_unknown_", "start_s": 4.0, "end_s": 6.0},
    {"label": "stop", "start_s": 8.0, "end_s": 8.4},
    {"label": "go", "start_s": 11.0, "end_s": 11.3},
]


def test_score_counts_each_kind_of_outcome():
    detections = [
        (Detection("yes", 0.9, 1.05, 1.45), 1.6),   # hit, 0.1 s after the word
        (Detection("yes", 0.8, 1.1, 1.4), 1.7),     # a second detection of the same word: nothing left to match
        (Detection("no", 0.7, 4.8, 5.2), 5.3),      # on the sentence: a false alarm on speech
        (Detection("go", 0.7, 8.0, 8.4), 8.5),      # wrong label on "stop": a substitution
        (Detection("up", 0.7, 14.0, 14.3), 14.4),   # far from everything: a false alarm on noise
    ]
    r = score(detections, TRUTH, duration_s=18.0, tolerance_s=0.75)
    assert (r["n_keywords"], r["hits"], r["substitutions"], r["misses"]) == (3, 1, 1, 1)
    assert (r["false_alarms"], r["false_alarms_on_sentences"], r["false_alarms_on_noise"]) == (3, 1, 2)
    assert r["recall"] == round(1 / 3, 4) and r["false_alarms_per_hour"] == 600.0
    assert r["latency_s_median"] == 0.1
