from pathlib import Path

import numpy as np
import pytest
import torch

from drsn_asr.runtime.audio import write_audio
from drsn_asr.training.data import (
    NoisyBatches,
    fit_window,
    label_for,
    read_fsdd,
    read_labelled_dir,
    read_speech_commands,
    speech_commands_noise,
    stable_fraction,
)
from drsn_asr.runtime.config import LABEL_SILENCE, LABEL_UNKNOWN


def _speech_commands_tree(root):
    """A tiny Speech Commands v0.02-style tree: words, split lists, background noise."""
    rng = np.random.default_rng(0)
    files = []
    for word in ("yes", "no", "marvin"):
        for speaker in ("0a1b2c3d", "1f2e3d4c", "99aa88bb"):
            for take in range(2):
                rel = f"{word}/{speaker}_nohash_{take}.wav"
                (root / word).mkdir(parents=True, exist_ok=True)
                write_audio(root / rel, (rng.standard_normal(8000) * 0.1).astype(np.float32))
                files.append(rel)
    (root / "_background_noise_").mkdir()
    write_audio(root / "_background_noise_" / "street.wav", (rng.standard_normal(32000) * 0.1).astype(np.float32))
    (root / "validation_list.txt").write_text("\n".join(f for f in files if "1f2e3d4c" in f) + "\n")
    (root / "testing_list.txt").write_text("\n".join(f for f in files if "99aa88bb" in f) + "\n")
    return files


def test_speech_commands_reader_uses_its_split_lists(tmp_path):
    _speech_commands_tree(tmp_path)
    train = read_speech_commands(tmp_path, "train")
    validation = read_speech_commands(tmp_path, "validation")
    test = read_speech_commands(tmp_path, "test")
    assert len(train) == len(validation) == len(test) == 6
    assert {e.group for e in train} == {"0a1b2c3d"}
    assert {e.group for e in test} == {"99aa88bb"}
    assert {e.word for e in train} == {"yes", "no", "marvin"}
    assert [p.name for p in speech_commands_noise(tmp_path)] == ["street.wav"]
    assert all("_background_noise_" not in e.path for e in train + validation + test)


def test_speech_commands_reader_needs_split_lists(tmp_path):
    (tmp_path / "yes").mkdir()
    with pytest.raises(FileNotFoundError, match="validation_list"):
        read_speech_commands(tmp_path, "train")


def test_fsdd_split_by_speaker():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"
    if not root.is_dir():
        pytest.skip("shared/data is not beside this checkout")
    held_out = read_fsdd(root, ["theo", "lucas"])
    train = read_fsdd(root, ["jackson", "nicolas"])
    assert len(held_out) == len(train) == 1000
    assert not {e.group for e in held_out} & {e.group for e in train}
    assert {e.word for e in train} == {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def test_labelled_dir_reader(tmp_path):
    _speech_commands_tree(tmp_path)
    exs = read_labelled_dir(tmp_path)
    assert len(exs) == 18
    with pytest.raises(ValueError, match="no audio clips"):
        read_labelled_dir(tmp_path / "_background_noise_")


def test_labels_and_stable_split():
    vocab = ["yes", "no"]
    assert label_for("yes", vocab) == "yes"
    assert label_for("marvin", vocab) == LABEL_UNKNOWN
    assert label_for(LABEL_SILENCE, vocab) == LABEL_SILENCE
    assert stable_fraction("espeak/en+m1") == stable_fraction("espeak/en+m1")
    fractions = [stable_fraction(f"voice{i}") for i in range(1000)]
    assert 0.05 < np.mean(np.array(fractions) < 0.1) < 0.15


def test_fit_window_keeps_short_clips_whole_and_crops_long_ones_around_the_loudest_part():
    rng = np.random.default_rng(0)
    short = np.ones(4000, np.float32)
    out = fit_window(short, 16000, rng)
    assert len(out) == 16000 and out.sum() == 4000
    long = np.zeros(48000, np.float32)
    long[30000:32000] = 1
    out = fit_window(long, 16000, None)
    assert len(out) == 16000 and out.sum() == 2000


def test_noisy_batches_hit_the_requested_snr():
    n = 16000
    speech = torch.zeros(4, n, dtype=torch.int16)
    speech[:2, 4000:8000] = (torch.randn(2, 4000) * 3000).to(torch.int16)  # active part only
    rms = (speech[:, 4000:8000].float() / 32768).square().mean(1).sqrt()
    rms[2:] = 0.0  # silence examples
    noise = torch.randn(n * 10).to(torch.float16)
    batches = NoisyBatches(speech, rms, noise, (5.0, 5.0), p_clean=0.0)
    mixed = batches.mix(torch.arange(4), torch.Generator().manual_seed(0))
    added = mixed - speech.float() / 32768
    snr_db = 20 * torch.log10(rms[:2] / added[:2].square().mean(1).sqrt())
    assert torch.allclose(snr_db, torch.full((2,), 5.0), atol=0.05)
    assert (added[2:].square().mean(1) > 0).all()  # silence examples get noise at some level


def test_a_second_noise_is_added_at_its_relative_level_and_only_when_asked():
    n = 16000
    speech = torch.zeros(4, n, dtype=torch.int16)
    rms = torch.full((4,), 0.1)
    first = torch.ones(2 * n) * 0.5  # a DC "noise" in the first half of the pool, a tone in the second
    tone = torch.sin(torch.arange(2 * n) * 0.3)
    pool = torch.cat([first, tone])
    alone = NoisyBatches(speech, rms, pool, (0.0, 0.0), p_clean=0.0)
    both = NoisyBatches(speech, rms, pool, (0.0, 0.0), p_clean=0.0, p_second_noise=1.0, second_noise_db=(0.0, 0.0))
    a = alone.mix(torch.arange(4), torch.Generator().manual_seed(0))
    b = both.mix(torch.arange(4), torch.Generator().manual_seed(0))
    rms_of = lambda x: x.square().mean(1).sqrt()
    assert torch.allclose(rms_of(a), rms, rtol=1e-3) and torch.allclose(rms_of(b), rms, rtol=1e-3)  # SNR kept
    assert not torch.allclose(a, b)  # a second segment went in
    none = NoisyBatches(speech, rms, pool, (0.0, 0.0), p_clean=0.0, p_second_noise=0.0)
    assert torch.equal(none.mix(torch.arange(4), torch.Generator().manual_seed(0)), a)  # off: the same stream


def test_real_commands_split_by_speaker_never_shares_a_speaker_and_covers_every_clip():
    from drsn_asr.training.data import REAL_COMMANDS_TEST_PART, read_real_commands

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech-commands-v0.02-test"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    parts = {"train": read_real_commands(root, (0.0, 0.6)), "validation": read_real_commands(root, (0.6, 0.8)),
             "test": read_real_commands(root, REAL_COMMANDS_TEST_PART)}
    speakers = {name: {ex.group for ex in exs} for name, exs in parts.items()}
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["train"] & speakers["test"] and not speakers["validation"] & speakers["test"]
    assert sum(len(exs) for exs in parts.values()) == len(read_real_commands(root, (0.0, 1.0)))
    for exs in parts.values():  # every split hears the commands and real non-commands
        words = {ex.word for ex in exs}
        assert {"yes", "stop", "_silence_"} <= words and len(exs) > 400


def test_a_recipe_cannot_train_or_validate_on_the_real_test_speakers(tmp_path):
    from drsn_asr.training.train import DataConfig, collect_examples

    cfg = DataConfig(tts_dir=None, fsdd_dir=None, sentences_dir=None, real_commands_dir=str(tmp_path),
                     real_commands_validation_part=(0.6, 0.9))
    with pytest.raises(ValueError, match="test speakers"):
        collect_examples(cfg, tmp_path)
