"""Named operating points (`sensitivity`): carried in the checkpoint, chosen by the Recognizer, overridable."""

import subprocess
import sys
from pathlib import Path

import pytest

from drsn_asr import Recognizer, load_model, transcribe
from drsn_asr.runtime.checkpoint import available_models, read_checkpoint, save_model
from drsn_asr.runtime.multistream import MultiStreamRecognizer

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "drsn_asr" / "assets" / "street_demo.flac"
PRESETS = {"few_false_alarms": {"threshold": 0.95, "smoothing_ms": 240.0},  # (no per-label thresholds of its own)
           "balanced": {"threshold": 0.7, "thresholds": {"yes": 0.8}},
           "find_everything": {"threshold": 0.35, "thresholds": {}}}


@pytest.fixture(scope="module")
def with_presets(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "model.pt"
    save_model(path, load_model("logmel", device="cpu"), sensitivity=PRESETS, **PRESETS["balanced"])
    return path


def test_presets_travel_in_the_checkpoint_and_choose_the_settings(with_presets):
    model = load_model(with_presets, device="cpu")
    assert model.sensitivity == PRESETS
    assert Recognizer(model).config.threshold == 0.7  # balanced is what the model carries
    assert Recognizer(model).config.thresholds == {"yes": 0.8}
    assert Recognizer(model, sensitivity="few_false_alarms").config.thresholds == {}  # not the carried (balanced's)
    few = Recognizer(model, sensitivity="few_false_alarms").config
    assert (few.threshold, few.smoothing_ms) == (0.95, 240.0)
    assert few.hop_ms == Recognizer(model).config.hop_ms  # what a preset leaves out comes from the model
    assert Recognizer(model, sensitivity="find_everything").config.threshold == 0.35
    # an expert's option wins over the preset's
    assert Recognizer(model, sensitivity="few_false_alarms", threshold=0.5).config.threshold == 0.5
    assert MultiStreamRecognizer(model, sensitivity="find_everything").config.threshold == 0.35


def test_presets_change_what_is_found(with_presets):
    found = {name: transcribe(DEMO, model=str(with_presets), sensitivity=name)
             for name in ("few_false_alarms", "find_everything")}
    assert len(found["find_everything"]) > len(found["few_false_alarms"])
    assert min(d.score for d in found["few_false_alarms"]) >= 0.95


def test_an_unknown_preset_or_a_model_without_presets_is_a_clear_error(with_presets):
    with pytest.raises(ValueError, match="not one of this model's presets.*'balanced'"):
        Recognizer(with_presets, sensitivity="paranoid")
    with pytest.raises(ValueError, match="it carries none.*threshold="):
        Recognizer(REPO / "models" / "previous_default.pt", sensitivity="balanced")


def test_a_preset_with_an_unknown_setting_is_refused_on_save_and_on_load(tmp_path, with_presets):
    model = load_model(with_presets, device="cpu")
    with pytest.raises(ValueError, match="sensitivity.balanced"):
        save_model(tmp_path / "bad.pt", model, sensitivity={"balanced": {"treshold": 0.5}})
    import torch

    state = read_checkpoint(with_presets)
    state["sensitivity"]["balanced"] = {"treshold": 0.5}
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="sensitivity.balanced"):
        load_model(tmp_path / "bad.pt")


def test_cli_takes_a_sensitivity(with_presets):
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "drsn_asr", "transcribe", str(DEMO), "--model", str(with_presets), *extra],
        capture_output=True, text=True)
    few, everything = run("--sensitivity", "few_false_alarms"), run("--sensitivity", "find_everything")
    assert few.returncode == 0 and everything.returncode == 0, few.stderr + everything.stderr
    assert len(everything.stdout.splitlines()) > len(few.stdout.splitlines())
    bad = run("--sensitivity", "loud")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_models_lists_each_shipped_models_presets(capsys):
    from drsn_asr.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    balanced = load_model("default", device="cpu").sensitivity["balanced"]
    assert f"--sensitivity balanced: hop_ms {balanced['hop_ms']:g}, smoothing_ms {balanced['smoothing_ms']:g}, " \
           f"threshold {balanced['threshold']:g}" in out
    assert out.count("--sensitivity") == 3 * sum(bool(load_model(n, device="cpu").sensitivity) for n in available_models())
