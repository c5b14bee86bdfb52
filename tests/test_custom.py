"""Custom commands from text (`drsn-asr train-words`): phrase checks, corpus plan, fine-tuning start, a real run."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_asr import Recognizer, load_model
from drsn_asr.training import tts
from drsn_asr.runtime.audio import write_audio
from drsn_asr.cli import main as cli_main
from drsn_asr.runtime.config import ModelConfig
from drsn_asr.training.custom import (
    COMMON_WORDS,
    WordsConfig,
    check_config,
    corpus_config,
    load_words_config,
    normalise_phrase,
    sub_phrases,
    train_words,
)
from drsn_asr.training.data import read_sentences
from drsn_asr.tools.evaluate import expected_label
from drsn_asr.runtime.model import build_net
from drsn_asr.training.train import initialise_from, labels_for

needs_espeak = pytest.mark.skipif(not tts.engine_available("espeak"), reason="espeak-ng is not installed")


def test_phrases_are_normalised_and_bad_ones_refused_with_a_hint():
    assert normalise_phrase("  Lights   ON ") == "lights on"
    assert normalise_phrase("don't stop") == "don't stop"
    with pytest.raises(ValueError, match="numbers as words"):
        normalise_phrase("channel 4")
    with pytest.raises(ValueError, match="letters, spaces"):
        normalise_phrase("lights-on!")
    with pytest.raises(ValueError, match="empty"):
        normalise_phrase("   ")
    with pytest.raises(ValueError, match="at least one"):
        check_config(WordsConfig())
    with pytest.raises(ValueError, match="twice"):
        check_config(WordsConfig(phrases=("Lights on", "lights  on")))
    with pytest.raises(ValueError, match="both phrases and negatives"):
        check_config(WordsConfig(phrases=("lights on",), negatives=("Lights On",)))


def test_sub_phrases_are_every_shorter_run_of_words():
    assert sub_phrases("computer") == []
    assert sub_phrases("lights on") == ["lights", "on"]
    assert sub_phrases("turn the light") == ["turn", "the", "light", "turn the", "the light"]


def test_corpus_speaks_phrases_their_parts_and_negatives_every_time_and_common_words_sometimes():
    cfg = check_config(WordsConfig(phrases=("lights on", "lights off"), negatives=("nights on",)))
    spec = corpus_config(cfg)
    assert spec.keywords == ("lights on", "lights off", "lights", "on", "off", "nights on")
    assert not set(spec.keywords) & set(spec.unknown_words)
    assert set(spec.unknown_words) == set(COMMON_WORDS) - {"lights", "on", "off"}
    assert spec.unknown_keep == cfg.common_word_share
    off = corpus_config(dataclasses.replace(cfg, espeak_voices=0, piper_renderings=0))
    assert "espeak" not in off.engines and "piper" not in off.engines


def test_yaml_form_rejects_unknown_keys_and_cli_overrides_win(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text('phrases: ["Lights on", computer]\nepochs: 2\n')
    cfg = load_words_config(path, {"out": "x.pt", "epochs": None})
    assert cfg.phrases == ("lights on", "computer") and cfg.epochs == 2 and cfg.out == "x.pt"
    path.write_text("phrases: [computer]\nepoch: 2\n")
    with pytest.raises(ValueError, match="epoch"):
        load_words_config(path)


def test_fine_tuning_starts_from_the_base_backbone_and_its_shared_label_rows():
    base = load_model("default", device="cpu")
    labels = labels_for(("lights on", "computer"))
    net = build_net(base.net.config, base.features, len(labels))  # the default's own kind of network
    fresh_fc = net.fc.weight.detach().clone()
    initialise_from(net, labels, "default")
    base_state = base.net.state_dict()
    for name, value in net.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(value, base_state[name]), name
    for label in ("_unknown_", "_silence_"):
        i, j = labels.index(label), base.labels.index(label)
        assert torch.equal(net.fc.weight[i], base.net.fc.weight[j])
        assert torch.equal(net.fc.bias[i], base.net.fc.bias[j])
    assert torch.equal(net.fc.weight[0], fresh_fc[0])  # a new command keeps its fresh initialisation

    other = build_net(dataclasses.replace(base.net.config, stem_channels=8), base.features, len(labels))
    with pytest.raises(ValueError, match="architecture or frontend"):
        initialise_from(other, labels, "default")


def test_sentences_mentioning_a_word_are_left_out(tmp_path):
    root = tmp_path / "clean"
    root.mkdir()
    for name in ("a", "b", "c"):
        write_audio(root / f"{name}.flac", np.zeros(16000, np.float32))
    (tmp_path / "label.json").write_text(json.dumps({
        "a.wav": {"intent": "orderDrink", "slots": {"roast": "Dark roast"}},
        "b.wav": {"intent": "orderDrink", "slots": {"coffeeDrink": "latte"}},
        "c.wav": {"intent": "orderDrink", "slots": {}},
    }))
    kept = {ex.group for ex in read_sentences(root, exclude_words=("dark", "mocha"))}
    assert kept == {"b", "c"}
    assert {ex.group for ex in read_sentences(root)} == {"a", "b", "c"}
    (tmp_path / "label.json").unlink()
    with pytest.raises(FileNotFoundError, match="label.json"):
        read_sentences(root, exclude_words=("dark",))


def test_evaluate_folders_with_underscores_hold_multi_word_phrases():
    labels = ["lights on", "_unknown_", "_silence_"]
    assert expected_label("lights_on", labels) == "lights on"
    assert expected_label("lights", labels) == "_unknown_"
    assert expected_label("_silence_", labels) == "_silence_"


@needs_espeak
def test_a_phrase_longer_than_the_window_is_refused_with_what_to_do(tmp_path):
    cfg = WordsConfig(phrases=("please would you kindly switch every single light in the kitchen off",),
                      out=str(tmp_path / "m.pt"), work_dir=str(tmp_path / "work"), espeak_voices=3,
                      flite_renderings=0, festival_renderings=0, pico_renderings=0, piper_renderings=0,
                      common_word_share=0.0, workers=1, sentences_dir=None)
    with pytest.raises(ValueError, match="shorter phrase"):
        train_words(cfg, progress=False)
    assert not (tmp_path / "m.pt").exists()


@needs_espeak
def test_train_words_end_to_end_writes_a_usable_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "models" / "coffee.pt"
    cfg = WordsConfig(phrases=("cappuccino", "dark roast"), negatives=("carpet",), out=str(out),
                      work_dir=str(tmp_path / "work"), espeak_voices=24, flite_renderings=1, festival_renderings=0,
                      pico_renderings=1, piper_renderings=0, common_word_share=0.05, epochs=1, workers=1, threads=1,
                      sentences_dir=None)
    report = train_words(cfg, progress=False)
    model = load_model(out, device="cpu")
    assert model.labels == ["cappuccino", "dark roast", "_unknown_", "_silence_"]
    assert report["labels"] == model.labels and report["renderings"] == 24 + 5 + 2
    assert model.training["config"]["init_from"] == "default"
    assert model.features == load_model("default", device="cpu").features
    held = report["held_out_voices"]
    assert held["n_clips"] > 0 and 0.0 <= held["accuracy"] <= 1.0
    spoken = tts.trim(tts.synthesize(tts.list_voices(["espeak"])[0][0], "dark roast"))
    rec = Recognizer(model)
    rec.feed(np.concatenate([np.zeros(8000, np.float32), spoken]))
    rec.flush()
    assert rec.n_classifications > 0 and set(rec.scores) == set(model.labels)
    assert all(np.isfinite(v) for v in rec.scores.values())

    mtime = out.stat().st_mtime_ns
    again = train_words(cfg, progress=False)  # same phrases: corpus kept, training already done
    assert again["corpus_counts"].get("written", 0) == 0 and again["train_s"] < report["train_s"]
    assert out.stat().st_mtime_ns >= mtime


def test_cli_train_words_explains_missing_out_and_bad_phrases(capsys):
    assert cli_main(["train-words", "computer"]) == 1
    assert "--out is required" in capsys.readouterr().err
    assert cli_main(["train-words", "channel 4", "--out", "x.pt"]) == 1
    assert "numbers as words" in capsys.readouterr().err


def test_the_recipe_validates_on_held_out_voices_even_when_the_base_validated_on_real_speakers_only(tmp_path):
    from drsn_asr.training.custom import WordsConfig, train_config

    base = load_model("default", device="cpu")
    assert base.training["config"]["data"]["tts_validation"] is False  # the default chose its checkpoint on real voices
    recipe = train_config(WordsConfig(phrases=("lights on",), work_dir=str(tmp_path)))
    assert recipe.data.tts_validation is True  # else no phrase is in validation and the score is rejection alone
    assert recipe.data.vocabulary == ("lights on",) and recipe.init_from == "default"
    assert recipe.features == base.features and recipe.model == base.net.config
    real = base.training["config"]["data"]["real_commands_dir"]  # relative to the checkout
    assert recipe.data.real_commands_dir == (real if Path(real).is_dir() else None)
    elsewhere = train_config(WordsConfig(phrases=("lights on",), work_dir=str(tmp_path)), base=tmp_path)
    assert elsewhere.data.real_commands_dir is None  # not there (a user's machine): trained without, not an error
