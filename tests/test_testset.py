"""pipelines/build_testset.py --split validation: a recipe's real validation speaker, never the test's."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_validation_split_holds_the_recipes_validation_speaker_and_training_noise_kinds(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    out = tmp_path / "validation"
    r = subprocess.run([sys.executable, str(REPO / "pipelines" / "build_testset.py"), "--split", "validation",
                        "--config", str(REPO / "configs" / "tuning.yaml"), "--out", str(out),
                        "--tts-dir", str(tmp_path / "no_corpus")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    digits = [p for p in (out / "real").rglob("*.wav") if p.parent.name not in ("sentence", "_silence_")]
    assert len(digits) == 500 and {p.stem.split("_")[1] for p in digits} == {"lucas"}
    noises = {p.stem for p in (out / "noise").glob("*.wav")}
    assert {"car_horn_0", "babble_0", "doing_the_dishes"} <= noises
    assert not [n for n in noises if n.startswith(("siren", "wind", "running_tap", "kitchen"))]
    assert len(list((out / "real" / "sentence").glob("*.wav"))) > 100


def test_validation_split_needs_a_recipe_with_a_real_validation_speaker():
    r = subprocess.run([sys.executable, str(REPO / "pipelines" / "build_testset.py"), "--split", "validation",
                        "--config", str(REPO / "configs" / "default.yaml")], capture_output=True, text=True)
    assert r.returncode != 0 and "fsdd_validation_speakers" in r.stderr
