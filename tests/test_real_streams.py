"""pipelines/real_streams.py: replaying the decision rule on recorded posteriors makes a Recognizer's detections;
the presets follow their rule; and the benchmark runs end to end on real voices."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pipelines"))

from real_streams import choose_presets, label_thresholds_pay, posteriors, replay  # noqa: E402

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.audio import read_audio  # noqa: E402
from drsn_asr.runtime.stream import detector_config  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def test_replay_on_recorded_posteriors_makes_the_recognizers_detections():
    model = load_model("default", device="cpu")
    audio = read_audio(REPO / "drsn_asr" / "assets" / "street_demo.flac")
    config = replace(detector_config(model), threshold=0.5, thresholds={})  # one threshold for every label
    live = []
    rec = Recognizer(model, threshold=0.5, thresholds={}, on_detection=lambda d: live.append((d, rec.time_s)))
    for start in range(0, len(audio), 160):  # 10 ms chunks, as a microphone delivers them
        rec.feed(audio[start : start + 160])
    rec.flush()
    times, probs = posteriors(model, audio, config.hop_ms)
    strict = replace(config, threshold=0.9)
    replayed, replayed_strict = replay(model.labels, [config, strict], times, probs, model.net.config.window_s)
    assert len(live) >= 10
    assert [(d.label, d.score, d.start_s, d.end_s) for d, _ in replayed] == [
        (d.label, d.score, d.start_s, d.end_s) for d, _ in live]
    assert [t for _, t in replayed] == pytest.approx([t for _, t in live], abs=1e-6)  # emitted when the window ends
    # settings sharing one DecisionRule (one slot each) decide as a rule of their own would
    alone, = replay(model.labels, [strict], times, probs, model.net.config.window_s)
    assert replayed_strict == alone and 0 < len(alone) < len(replayed)


def _point(threshold, smoothing_ms, f1, recall, fa):
    return {"settings": {"hop_ms": 80.0, "smoothing_ms": smoothing_ms, "threshold": threshold},
            "mean": {"f1": f1, "recall": recall, "non_command_false_alarms_per_hour": fa}}


def test_presets_follow_the_written_rule():
    curve = [_point(0.5, 160.0, 0.70, 0.90, 400.0), _point(0.6, 160.0, 0.80, 0.86, 200.0),
             _point(0.7, 160.0, 0.82, 0.80, 100.0), _point(0.8, 160.0, 0.81, 0.72, 40.0),
             _point(0.9, 160.0, 0.75, 0.60, 20.0), _point(0.9, 240.0, 0.74, 0.55, 10.0)]
    presets = choose_presets(curve)
    assert presets["balanced"]["threshold"] == 0.7  # top F1
    assert presets["few_false_alarms"]["threshold"] == 0.9  # ≤ 25/h: of 20 and 10 per hour, the one finding more
    assert presets["few_false_alarms"]["smoothing_ms"] == 160.0
    assert presets["find_everything"]["threshold"] == 0.6  # ≤ 300/h: 400/h is out
    # nothing at a quarter of balanced's false alarms: the strictest point
    presets = choose_presets(curve[:4])
    assert presets["few_false_alarms"]["threshold"] == 0.8


def test_per_label_thresholds_ship_only_when_they_pay():
    point = lambda f1, fa: {"mean": {"f1": f1, "non_command_false_alarms_per_hour": fa}}  # noqa: E731
    assert label_thresholds_pay(point(0.80, 150.0), point(0.815, 150.0))
    assert not label_thresholds_pay(point(0.80, 150.0), point(0.805, 140.0))  # too little F1
    assert not label_thresholds_pay(point(0.80, 150.0), point(0.83, 151.0))  # more false alarms


@pytest.mark.skipif(not (SHARED / "speech-commands-v0.02-test").is_dir(), reason="needs ../shared/data")
def test_the_benchmark_runs_on_real_voices_and_writes_presets(tmp_path):
    out, model = tmp_path / "validation.json", tmp_path / "with_presets.pt"
    cache = tmp_path / "posteriors.npz"
    command = [sys.executable, str(REPO / "pipelines" / "real_streams.py"), "--split", "validation", "--snrs", "5",
               "--limit", "24", "--thresholds", "0.5,0.7,0.9", "--smoothings-ms", "160", "--posteriors", str(cache),
               "--full-json", str(out), "--write-model", str(model)]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    written = cache.stat().st_mtime_ns
    again = subprocess.run(command[:-4] + ["--json", str(tmp_path / "again.json")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert cache.stat().st_mtime_ns == written  # the posteriors were read back, not recomputed
    assert json.loads((tmp_path / "again.json").read_text())["carried"] == result["carried"]
    kinds = {(s["kind"], s["snr_db"]) for s in result["streams"]}
    assert kinds == {("keywords", 5.0), ("non_command", 5.0)}
    keywords = next(s for s in result["streams"] if s["kind"] == "keywords")
    assert keywords["n_keywords"] == 24 and keywords["n_non_command"] > 0
    assert next(s for s in result["streams"] if s["kind"] == "non_command")["n_keywords"] == 0
    lowest, highest = result["curve"][0]["mean"], result["curve"][-1]["mean"]  # thresholds 0.5 and 0.9
    assert lowest["recall"] >= highest["recall"]
    assert lowest["non_command_false_alarms_per_hour"] >= highest["non_command_false_alarms_per_hour"]
    balanced, labels = result["presets"]["balanced"], result["label_thresholds"]
    if labels["shipped"]:  # per-label thresholds paid: balanced carries them, and its figures are theirs
        assert balanced["settings"]["thresholds"] == labels["thresholds"] and balanced["mean"] == labels["with"]
    else:  # measured again on its own: the figures of its point of the sweep
        assert balanced == next(p for p in result["curve"] if p["settings"] == balanced["settings"])
    assert labels["without"] == next(p["mean"] for p in result["curve"] if p["settings"] == {
        **balanced["settings"], "thresholds": {}})
    loaded = load_model(model, device="cpu")
    assert set(loaded.sensitivity) == {"few_false_alarms", "balanced", "find_everything"}
    assert loaded.detector["threshold"] == loaded.sensitivity["balanced"]["threshold"]
    assert np.isfinite(result["presets"]["balanced"]["mean"]["f1"])
