"""pipelines/calibrate.py: the temperature is the one of least NLL, folding it into the last layer divides the
logits by it, and the pipeline writes a calibrated model with its reliability figures."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pipelines"))

from calibrate import fit_temperature, fold_temperature, reliability  # noqa: E402

from drsn_asr import load_model  # noqa: E402
from drsn_asr.runtime.audio import write_audio  # noqa: E402
from drsn_asr.runtime.features import make_frontend  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(20000, 10, generator=g)
    targets = torch.multinomial(torch.softmax(logits / 2.5, dim=1), 1, generator=g)[:, 0]
    assert fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.05)
    before, after = reliability(logits, targets), reliability(logits, targets, 2.5)
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]  # over-confident, then calibrated


def test_folding_the_temperature_divides_the_logits():
    model = load_model("logmel", device="cpu")
    windows = make_frontend(model.features)(torch.randn(3, 16000) * 0.1)
    with torch.no_grad():
        before = model.net(windows)
        fold_temperature(model, 1.7)
        after = model.net(windows)
    torch.testing.assert_close(after, before / 1.7, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not (SHARED / "speech-commands-v0.02-test").is_dir(), reason="needs ../shared/data")
def test_the_pipeline_writes_a_calibrated_model(tmp_path):
    clips = sorted((SHARED / "speech-commands-v0.02-test").glob("*/*.flac"))[::60]
    for clip in clips:
        (tmp_path / "fit" / clip.parent.name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "fit" / clip.parent.name / clip.name).symlink_to(clip)
    (tmp_path / "noise").mkdir()
    write_audio(tmp_path / "noise" / "white.wav", (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32))
    out = tmp_path / "calibrated.pt"
    run = subprocess.run([sys.executable, str(REPO / "pipelines" / "calibrate.py"), "logmel", "--fit", str(tmp_path / "fit"),
                          "--noise-dir", str(tmp_path / "noise"), "--snrs", "0", "--report", f"same={tmp_path / 'fit'}",
                          "--json", str(tmp_path / "c.json"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["fit"]["before"]["n"] == 2 * len(clips)  # each clip clean and at 0 dB
    assert result["fit"]["after"]["nll"] <= result["fit"]["before"]["nll"]
    assert set(result["report"]) == {"same, clean"}  # no noise given to the report: clean only
    calibrated = load_model(out, device="cpu")
    assert calibrated.training["calibration"]["temperature"] == result["temperature"]
    original = load_model("logmel", device="cpu")
    ratio = original.net.fc.weight / calibrated.net.fc.weight
    torch.testing.assert_close(ratio, torch.full_like(ratio, result["temperature"]), rtol=1e-3, atol=1e-3)
