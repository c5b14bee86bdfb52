"""drsn_asr.evaluate with noise mixed in: the per-noise breakdown adds up to the SNR's keyword accuracy."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from drsn_asr.tools.evaluate import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_per_noise_keyword_accuracy_adds_up_to_the_snrs(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    clips = tmp_path / "clips"
    for digit, word in ((3, "three"), (7, "seven")):
        (clips / word).mkdir(parents=True)
        for take in range(6):
            name = f"{digit}_theo_{take}.wav"
            shutil.copyfile(SHARED / "fsdd" / "recordings" / name, clips / word / name)
    noise = tmp_path / "noise"
    noise.mkdir()
    for name in ("running_tap.wav", "white_noise.wav"):
        shutil.copyfile(SHARED / "speech-commands-noise" / name, noise / name)
    result = evaluate(clips, noise_dir=noise, snrs_db=[0.0], seed=0, device="cpu")
    at_0 = result["by_snr"]["0.0"]
    per_noise = at_0["per_noise"]
    assert set(per_noise) <= {"running_tap", "white_noise"} and per_noise
    assert all(0.0 <= v <= 1.0 for v in per_noise.values())
    assert "per_noise" not in result  # clean audio was mixed with nothing
    # weighting each noise's accuracy by its clip count gives back the SNR's keyword accuracy; clip i's noise is
    # the seeded draw evaluate documents (sorted files, rng([seed, i, snr * 10 + 1000]))
    names = ["running_tap", "white_noise"]
    drawn = [names[int(np.random.default_rng([0, i, 1000]).integers(2))] for i in range(12)]
    assert set(drawn) == set(per_noise)
    total = sum(per_noise[name] for name in drawn) / len(drawn)
    assert abs(total - at_0["keyword_accuracy"]) < 1e-9


def test_a_model_carries_its_detector_settings_to_recognizers_and_evaluate(tmp_path):
    import torch

    from drsn_asr import Recognizer, load_model
    from drsn_asr.runtime.audio import write_audio
    from drsn_asr.runtime.checkpoint import read_checkpoint, save_model
    from drsn_asr.runtime.multistream import MultiStreamRecognizer

    path = tmp_path / "tuned.pt"
    save_model(path, load_model(device="cpu"), threshold=0.93, smoothing_ms=100.0)
    assert Recognizer(path, device="cpu").config.threshold == 0.93
    assert Recognizer(path, device="cpu").config.smoothing_ms == 100.0
    assert Recognizer(path, device="cpu", threshold=0.5).config.threshold == 0.5  # what the caller says wins
    assert MultiStreamRecognizer(path, device="cpu").config.threshold == 0.93
    assert Recognizer(device="cpu").config.threshold == load_model(device="cpu").detector.get("threshold", 0.6)
    clips = tmp_path / "clips" / "yes"
    clips.mkdir(parents=True)
    write_audio(clips / "a.wav", np.zeros(16000, np.float32))
    assert evaluate(tmp_path / "clips", model=str(path), device="cpu")["threshold"] == 0.93
    assert evaluate(tmp_path / "clips", model=str(path), device="cpu", detector={"threshold": 0.7})["threshold"] == 0.7
    # a setting this version does not know is refused at load, not ignored
    state = read_checkpoint(path)
    state["detector"]["sensitivity"] = 0.5
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="sensitivity"):
        load_model(tmp_path / "future.pt")


def test_noise_with_stretches_of_digital_silence_is_still_mixed_in(tmp_path):
    """A synthesized scene is silent between its events; a clip mixed with such a stretch would stay clean (and,
    until this was fixed, reached the frontend as float64 and crashed it)."""
    from drsn_asr.runtime.audio import write_audio

    rng = np.random.default_rng(0)
    tone = (0.3 * np.sin(2 * np.pi * 700 * np.arange(16000) / 16000)).astype(np.float32)
    clips = tmp_path / "clips" / "yes"
    clips.mkdir(parents=True)
    for i in range(8):
        write_audio(clips / f"{i}.wav", tone)
    noise = np.zeros(16000 * 30, np.float32)
    noise[-16000 * 2 :] = rng.standard_normal(16000 * 2).astype(np.float32) * 0.3  # sound only in the last 2 s
    (tmp_path / "noise").mkdir()
    write_audio(tmp_path / "noise" / "sparse.wav", noise)
    result = evaluate(tmp_path / "clips", noise_dir=tmp_path / "noise", snrs_db=[-10.0], seed=0, device="cpu")
    clean, noisy = result["predictions"], result["by_snr"]["-10.0"]["predictions"]
    assert all(a["score"] != b["score"] for a, b in zip(clean, noisy))  # every clip heard noise, none stayed clean
    write_audio(tmp_path / "noise" / "sparse.wav", np.zeros(16000 * 30, np.float32))
    with pytest.raises(ValueError, match="digital silence"):
        evaluate(tmp_path / "clips", noise_dir=tmp_path / "noise", snrs_db=[0.0], seed=0, device="cpu")


def test_top1_is_the_argmax_of_a_one_window_clip_and_never_below_the_thresholded_rule(tmp_path):
    import torch

    from drsn_asr import load_model
    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.tools.evaluate import clip_windows
    from drsn_asr.runtime.features import LogMel
    from drsn_asr.runtime.inference import inference_forward

    if not SHARED.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    clips = tmp_path / "clips"
    for digit, word in ((8, "eight"), (9, "nine"), (1, "one")):  # the held-out speaker's weakest digits
        (clips / word).mkdir(parents=True)
        for take in range(8):
            name = f"{digit}_theo_{take}.wav"
            shutil.copyfile(SHARED / "fsdd" / "recordings" / name, clips / word / name)
    model = load_model("logmel", device="cpu")  # 1 s log-mel windows below
    result = evaluate(clips, model=model, device="cpu", detector={"threshold": 0.95})
    frontend = LogMel(model.features)
    argmax = []
    for p in result["predictions"]:
        window = torch.from_numpy(clip_windows(read_audio(p["path"]), 16000, 1600))
        assert len(window) == 1  # FSDD digits are shorter than the window
        with torch.inference_mode():
            argmax.append(model.labels[int(inference_forward(model.net)(frontend(window)).argmax())])
    assert [p["top1"] for p in result["predictions"]] == argmax
    assert result["top1_keyword_accuracy"] == sum(a == p["label"] for a, p in zip(argmax, result["predictions"])) / 24
    # a keyword that reaches a threshold >= 0.5 outscores the rest, so the rule never beats top-1; at 0.95 it
    # misses clips that top-1 gets right
    assert result["top1_keyword_accuracy"] > result["keyword_accuracy"]
    assert all(p["top1"] == p["label"] for p in result["predictions"] if p["predicted"] == p["label"])
    assert result["top1_unknown_rejection"] is None  # no clip of another word here


def test_top1_rejection_counts_the_unknown_clips_whose_argmax_is_not_a_keyword():
    from drsn_asr.tools.evaluate import Prediction, summarize

    labels = ["yes", "no", "_unknown_", "_silence_"]
    predictions = [Prediction("a", "_unknown_", "_unknown_", 0.9, "yes"),  # rejected by the rule, not by top-1
                   Prediction("b", "_unknown_", "_silence_", 0.5, "_unknown_"),
                   Prediction("c", "_unknown_", "no", 0.7, "no"),
                   Prediction("d", "yes", "_unknown_", 0.4, "yes")]
    result = summarize(predictions, labels)
    assert result["unknown_rejection"] == 2 / 3 and result["top1_unknown_rejection"] == 1 / 3
    assert result["keyword_accuracy"] == 0.0 and result["top1_keyword_accuracy"] == 1.0
    assert result["accuracy"] == 0.25 and result["top1_accuracy"] == 0.5
