"""Build the held-out evaluation sets (never used in training or model selection), in Speech Commands layout.

    python pipelines/build_testset.py [--out data/testset]
    python pipelines/build_testset.py --split validation --config configs/tuning.yaml [--out data/validation]

Writes
  data/testset/real/<word>/*.wav    real speech: FSDD digits of the held-out speaker (theo) and windows of
                                    held-out command sentences (folder `sentence`, expected `_unknown_`), plus
                                    `_silence_` clips of held-out noise
  data/testset/speech_commands/<word>/*.flac   real speakers of ../shared/data/speech-commands-v0.02-test whose
                                    id hashes into data.REAL_COMMANDS_TEST_PART: the ten commands, the digits, other
                                    words (expected `_unknown_`) and `_silence_` clips
  data/testset/tts/<word>/*.wav     every word of the TTS corpus spoken by the held-out test voices
  data/testset/noise/*.wav          held-out noise for --noise-dir: real recordings never trained on (kitchen,
                                    running tap) and synthesized sirens and wind (kinds kept out of training)

`--split validation` writes the same layout from a recipe's validation split instead, for choosing between
recipes and settings on real voices: the digits of its `fsdd_validation_speakers`, its validation Speech Commands
speakers (`real_commands_validation_part`), its validation sentences and TTS voices, and noise of its training kinds and files (nothing of the test set's speaker, noise or voices).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr.training import noise  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio, write_audio  # noqa: E402
from drsn_asr.training.data import (REAL_COMMANDS_TEST_PART, load_example, read_fsdd, read_real_commands,  # noqa: E402
                           read_sentences, read_tts_corpus, stable_fraction)
from drsn_asr.training.train import DataConfig, load_train_config, sentence_exclusions  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TEST_SPEAKERS = ("theo",)
HELD_OUT_NOISE = (SHARED / "command-sentences" / "kitchen.flac", SHARED / "speech-commands-noise" / "running_tap.wav")
HELD_OUT_KINDS = ("siren", "wind")


def build(out: Path, rng: np.random.Generator, speakers: tuple[str, ...], sentence_part: tuple[float, float],
          noise_files: list[Path], noise_kinds: tuple[str, ...], voice_part: tuple[float, float], tts_dir: Path,
          cfg: DataConfig, commands_part: tuple[float, float]) -> None:
    """Write out/real, out/speech_commands, out/tts and out/noise from these speakers, sentences, noises and TTS
    voices."""
    for sub in ("real", "speech_commands", "tts", "noise"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for ex in read_real_commands(SHARED / "speech-commands-v0.02-test", commands_part):
        target = out / "speech_commands" / ex.word / Path(ex.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ex.path, target)
    for ex in read_fsdd(SHARED / "fsdd" / "recordings", speakers):
        target = out / "real" / ex.word / Path(ex.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ex.path, target)  # kept at 8 kHz: evaluate resamples, as it would for a user
    sentences = read_sentences(SHARED / "command-sentences" / "clean", hop_s=1.0, part=sentence_part,
                               exclude_words=sentence_exclusions(cfg))  # "eight ounce" is no _unknown_
    (out / "real" / "sentence").mkdir(parents=True, exist_ok=True)
    for i, ex in enumerate(sentences):
        write_audio(out / "real" / "sentence" / f"{ex.group}_{i}.wav", load_example(ex))

    (out / "noise").mkdir(parents=True, exist_ok=True)
    babble = None  # crowds of the split's own sentences, when its noise kinds hold any
    if "babble" in noise_kinds:
        babble = [a for a in (load_example(ex) for ex in sentences[::10]) if np.sqrt(np.mean(a**2)) > 1e-3]
    noises = []
    for path in noise_files:
        audio = read_audio(path)
        noises.append(audio)
        write_audio(out / "noise" / f"{path.stem}.wav", audio / max(1e-6, np.abs(audio).max()) * 0.9)
    for kind in noise_kinds:
        for i in range(3):
            audio = noise.street_scene(20.0, SAMPLE_RATE, rng, kinds=[kind], speech=babble)
            noises.append(audio)
            write_audio(out / "noise" / f"{kind}_{i}.wav", audio / max(1e-6, np.abs(audio).max()) * 0.9)
    (out / "real" / "_silence_").mkdir(parents=True, exist_ok=True)
    for i in range(100):
        source = noises[i % len(noises)]
        start = int(rng.integers(0, len(source) - SAMPLE_RATE))
        clip = source[start : start + SAMPLE_RATE] * 10 ** (rng.uniform(-30, 0) / 20)
        write_audio(out / "real" / "_silence_" / f"noise_{i}.wav", np.clip(clip, -1, 1))

    n_tts = 0
    if (tts_dir / "manifest.csv").is_file():
        for ex in read_tts_corpus(tts_dir):
            if voice_part[0] <= stable_fraction(ex.group) < voice_part[1]:
                target = out / "tts" / ex.word / f"{ex.group.replace('/', '__')}__{Path(ex.path).name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ex.path, target)
                n_tts += 1
    n_real = sum(1 for _ in (out / "real").rglob("*.wav"))
    n_commands = sum(1 for _ in (out / "speech_commands").rglob("*.flac"))
    print(f"wrote {n_real} real clips, {n_commands} Speech Commands clips, {n_tts} TTS clips, {len(noises)} noise recordings to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--config", default=str(REPO / "configs" / "tuning.yaml"),
                        help="with --split validation: the recipe whose validation split is written")
    parser.add_argument("--out", default=None, help="default: data/testset, or data/validation")
    parser.add_argument("--tts-dir", default=str(REPO / "data" / "corpus" / "tts"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.split == "test":
        cfg = DataConfig()
        build(Path(args.out or REPO / "data" / "testset"), rng, TEST_SPEAKERS, (0.9, 1.0), list(HELD_OUT_NOISE),
              HELD_OUT_KINDS, (cfg.validation_voice_fraction, cfg.validation_voice_fraction + cfg.test_voice_fraction),
              Path(args.tts_dir), cfg, REAL_COMMANDS_TEST_PART)
        return
    cfg = load_train_config(args.config).data
    if not cfg.fsdd_validation_speakers and not cfg.real_commands_dir:
        parser.error(f"{args.config} has no data.fsdd_validation_speakers or data.real_commands_dir: its validation "
                     "split holds no real voice")
    build(Path(args.out or REPO / "data" / "validation"), rng, cfg.fsdd_validation_speakers, cfg.sentences_validation_part,
          [(REPO / f).resolve() for f in cfg.noise_files], cfg.noise_kinds, (0.0, cfg.validation_voice_fraction),
          Path(args.tts_dir), cfg, cfg.real_commands_validation_part if cfg.real_commands_dir else (0.0, 0.0))


if __name__ == "__main__":
    main()
