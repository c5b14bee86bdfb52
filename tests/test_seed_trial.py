"""pipelines/experiments/seed_trial.py: a recipe change judged on means over seeds, with a margin above their spread."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pipelines" / "experiments"))

from seed_trial import data_check, judge, shown  # noqa: E402


def _arm(means, rejection=0.97, score=0.79):
    return [{"mean": m, "rejection": rejection, "score": score} for m in means]


def _run(run: Path, validation_score: float, model: Path = REPO / "drsn_asr" / "assets" / "logmel.pt",
         examples_sha256: str | None = None, noise_files_sha256: str | None = None) -> str:
    """A training run's out_dir: `model` as its best.pt, recording `validation_score` (and `examples_sha256`
    and `noise_files_sha256`, the data it trained on) as training does."""
    run.mkdir(exist_ok=True)
    state = torch.load(model, map_location="cpu", weights_only=True)
    state["training"] = {**state["training"], "validation_score": validation_score,
                         "examples_sha256": examples_sha256, "noise_files_sha256": noise_files_sha256}
    torch.save(state, run / "best.pt")
    return str(run)


def test_a_gain_inside_the_seeds_spread_does_not_pass_and_a_clear_one_does():
    control = _arm([0.614, 0.620, 0.568])  # the tuning recipe's three seeds on the real validation voice
    inside = judge(control, _arm([0.600, 0.640, 0.630]), 0.01, 0.95, 0.01)
    assert inside["gain"] > 0.01  # more than the one-point margin of a single-run rule...
    assert not inside["checks"]["gain >= 2 standard errors"] and not inside["passes"]  # ...but within the spread
    clear = judge(control, _arm([0.680, 0.690, 0.670]), 0.01, 0.95, 0.01)
    assert clear["passes"] and clear["gain"] > 2 * clear["standard_error"]


def test_a_gain_bought_with_rejection_or_validation_score_does_not_pass():
    control = _arm([0.614, 0.620, 0.568])
    better = [0.680, 0.690, 0.670]
    assert not judge(control, _arm(better, rejection=0.90), 0.01, 0.95, 0.01)["passes"]
    assert not judge(control, _arm(better, score=0.76), 0.01, 0.95, 0.01)["passes"]


def test_records_name_folders_inside_the_repository_relative_to_it_and_others_in_full(tmp_path):
    assert shown(REPO / "data" / "validation" / "real") == "data/validation/real"
    assert shown(tmp_path / "real") == str((tmp_path / "real").resolve())


def test_an_arm_of_one_run_has_no_spread_and_is_refused():
    with pytest.raises(ValueError, match="at least two runs"):
        judge(_arm([0.6]), _arm([0.7, 0.71]), 0.01, 0.95, 0.01)


def test_seeds_of_one_arm_must_share_their_examples_and_the_arms_are_compared():
    assert data_check({"control": ["a", "a"], "treatment": ["a", "a"]}) is True
    assert data_check({"control": ["a", "a"], "treatment": ["b", "b"]}) is False  # a change of data
    assert data_check({"control": ["a", None], "treatment": ["a", "a"]}) is None  # a run recorded none
    with pytest.raises(SystemExit, match="control runs were trained on different examples"):
        data_check({"control": ["a", "b"], "treatment": ["a", "a"]})


def _validation_data(root: Path) -> tuple[Path, Path]:
    """A real validation folder (a real digit and a non-keyword clip) and a noise folder."""
    data = root / "real"
    (data / "seven").mkdir(parents=True)
    shutil.copyfile(REPO / "tests" / "data" / "fsdd_7_theo_0.wav", data / "seven" / "7_theo_0.wav")
    (data / "coffee").mkdir()  # a word outside the vocabulary: the rejection figure needs one
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    sf.write(data / "coffee" / "tone.wav", tone.astype(np.float32), 16000)
    noise = root / "noise"
    noise.mkdir()
    sf.write(noise / "hiss.wav", np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32), 16000)
    return data, noise


def test_the_pipeline_scores_runs_caches_them_and_finds_no_gain_between_copies_of_one_model(tmp_path):
    data, noise = _validation_data(tmp_path)
    noise_files = ["n", "n", "m", "m"]  # the treatment mixed in other noise recordings
    runs = [_run(tmp_path / f"run{i}", score, examples_sha256="x", noise_files_sha256=noise_files[i])
            for i, score in enumerate((0.70, 0.72, 0.71, 0.73))]
    out = tmp_path / "trial.json"
    cmd = [sys.executable, str(REPO / "pipelines" / "experiments" / "seed_trial.py"), "--control", *runs[:2], "--treatment",
           *runs[2:], "--data", str(data), "--noise-dir", str(noise), "--snr", "10,0", "--workers", "1",
           "--json", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "does not pass" in r.stdout
    result = json.loads(out.read_text())
    assert result["gain"] == 0.0 and not result["passes"]  # the same weights in both arms
    assert result["same_examples"] is True and "both arms trained on the same examples" in r.stdout
    assert result["same_noise_files"] is False and "the arms mixed in different noise recordings" in r.stdout
    assert result["runs"][runs[2]]["noise_files_sha256"] == "m"
    assert set(result["runs"][runs[0]]["keyword_accuracy"]) == {"clean", "10.0", "0.0"}
    assert result["control"]["score"] == pytest.approx(0.71) and result["treatment"]["score"] == pytest.approx(0.72)
    cached = Path(runs[0]) / "seed_trial_eval.json"
    stamp = cached.stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and cached.stat().st_mtime_ns == stamp  # same settings: the kept evaluation is reused
    moved = tmp_path / "moved"
    shutil.copytree(data, moved / "real")
    shutil.copytree(noise, moved / "noise")
    r = subprocess.run(cmd[:9] + [str(moved / "real"), "--noise-dir", str(moved / "noise")] + cmd[12:],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and cached.stat().st_mtime_ns == stamp  # the same data elsewhere: reused as well
    assert json.loads(out.read_text())["settings"]["data"] == str((moved / "real").resolve())
    r = subprocess.run(cmd[:-2] + ["--threshold", "0.5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and cached.stat().st_mtime_ns != stamp  # other settings: evaluated again
    stamp = cached.stat().st_mtime_ns
    _run(Path(runs[0]), 0.70, REPO / "models" / "ablation" / "resnet.pt")
    r = subprocess.run(cmd[:-2] + ["--threshold", "0.5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and cached.stat().st_mtime_ns != stamp  # other weights in the run: evaluated again


def test_runs_an_earlier_trial_recorded_join_an_arm_only_when_measured_on_the_same_data_and_settings(tmp_path):
    data, noise = _validation_data(tmp_path)
    first = [_run(tmp_path / f"first{i}", score) for i, score in enumerate((0.70, 0.72))]
    trial = [sys.executable, str(REPO / "pipelines" / "experiments" / "seed_trial.py"), "--data", str(data), "--noise-dir",
             str(noise), "--snr", "0", "--workers", "1"]
    record = tmp_path / "first.json"
    r = subprocess.run(trial + ["--control", *first, "--treatment", *first, "--json", str(record)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for run in first:  # the control's weights are gone; only the record is left
        shutil.rmtree(run)
    later = [_run(tmp_path / f"later{i}", 0.71, REPO / "models" / "ablation" / "resnet.pt") for i in range(2)]
    recorded = [f"{record}:{run}" for run in first]
    out = tmp_path / "later.json"
    r = subprocess.run(trial + ["--control", *recorded, "--treatment", *later, "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    earlier, result = json.loads(record.read_text()), json.loads(out.read_text())
    assert result["control"]["mean"] == earlier["control"]["mean"]  # the recorded figures, not a re-evaluation
    assert result["control"]["score"] == pytest.approx(0.71)
    assert result["arms"]["control"] == recorded
    assert result["runs"][later[0]]["checkpoint_sha256"] != result["runs"][recorded[0]]["checkpoint_sha256"]

    r = subprocess.run(trial + ["--threshold", "0.5", "--control", *recorded, "--treatment", *later],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "threshold differ" in r.stderr  # measured at another setting
    sf.write(noise / "hum.wav", (0.1 * np.sin(np.arange(16000) / 3)).astype(np.float32), 16000)
    r = subprocess.run(trial + ["--control", *recorded, "--treatment", *later], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "noise_sha256 differ" in r.stderr  # the noise folder is not what it was
    r = subprocess.run(trial + ["--control", f"{record}:runs/elsewhere", "--treatment", *later],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "records no run 'runs/elsewhere'" in r.stderr
    other = [_run(tmp_path / f"other{i}", 0.71, examples_sha256=d) for i, d in enumerate(("a", "b"))]
    r = subprocess.run(trial + ["--control", *later, "--treatment", *other], capture_output=True, text=True,
                       timeout=300)  # refused before any run is evaluated
    assert r.returncode != 0 and "treatment runs were trained on different examples" in r.stderr
    other = [_run(tmp_path / f"noisy{i}", 0.71, noise_files_sha256=d) for i, d in enumerate(("a", "b"))]
    r = subprocess.run(trial + ["--control", *later, "--treatment", *other], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "treatment runs were trained on different noise recordings" in r.stderr


def test_arms_short_of_min_seeds_are_recorded_without_a_verdict_and_complete_a_later_trial(tmp_path):
    data, noise = _validation_data(tmp_path)
    trial = [sys.executable, str(REPO / "pipelines" / "experiments" / "seed_trial.py"), "--data", str(data), "--noise-dir",
             str(noise), "--snr", "0", "--workers", "1", "--min-seeds", "2"]
    first = [_run(tmp_path / "c0", 0.70), _run(tmp_path / "t0", 0.72)]
    record = tmp_path / "seed0.json"
    r = subprocess.run(trial + ["--control", first[0], "--treatment", first[1], "--json", str(record)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "no verdict" in r.stdout and "pass" not in r.stdout.split("no verdict")[1]
    kept = json.loads(record.read_text())
    assert kept["passes"] is None and "gain" not in kept and set(kept["runs"]) == set(first)
    later = [_run(tmp_path / "c1", 0.70), _run(tmp_path / "t1", 0.72)]
    r = subprocess.run(trial + ["--control", f"{record}:{first[0]}", later[0],
                                "--treatment", f"{record}:{first[1]}", later[1]],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "does not pass" in r.stdout  # two seeds an arm: judged (the same weights: no gain)
    r = subprocess.run(trial[:-1] + ["1", "--control", first[0], "--treatment", first[1]],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "at least 2" in r.stderr


def test_a_folder_that_is_not_a_finished_run_is_refused_with_what_to_pass(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "pipelines" / "experiments" / "seed_trial.py"), "--control", str(tmp_path),
                        str(tmp_path), "--treatment", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "out_dir of a finished training run" in r.stderr


def test_data_without_non_keyword_clips_is_refused_rather_than_judged_without_rejection(tmp_path):
    data = tmp_path / "real"
    (data / "seven").mkdir(parents=True)
    shutil.copyfile(REPO / "tests" / "data" / "fsdd_7_theo_0.wav", data / "seven" / "7_theo_0.wav")
    runs = [_run(tmp_path / f"run{i}", 0.7) for i in range(4)]
    r = subprocess.run([sys.executable, str(REPO / "pipelines" / "experiments" / "seed_trial.py"), "--control", *runs[:2],
                        "--treatment", *runs[2:], "--data", str(data), "--noise-dir", str(tmp_path), "--snr", "0",
                        "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "no clips of words outside the vocabulary" in r.stderr
