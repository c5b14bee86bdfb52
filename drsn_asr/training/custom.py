"""Custom commands from text: speak the phrases with every TTS voice, then fine-tune the default model on them.

    drsn-asr train-words "cappuccino" "dark roast" ... --out my_model.pt      (or --config my_words.yaml)

Steps, all under `work_dir` (a second run with the same phrases reuses the corpus and resumes training):
1. corpus: each phrase, each of its shorter parts ("dark" and "roast" for "dark roast", which must not
   trigger it) and the user's `negatives` spoken by every rendering; a share of common words (`COMMON_WORDS`)
   as `_unknown_`; drsn_asr.corpus does the work with the voices counted in this config;
2. training: the base model's own recipe (augmentation, street noise, SpecAugment, random gain) with the new
   vocabulary, starting from the base model's weights (drsn_asr.training.train.initialise_from);
3. a report on the TTS voices held out of training (accuracy per phrase, rejection of the negatives).
The result is an ordinary checkpoint: load_model(path), Recognizer(model=path), serve, export, evaluate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import corpus
from ..runtime.audio import read_audio
from ..runtime.checkpoint import LoadedModel, load_model
from ..runtime.config import DetectorConfig, from_dict, load_yaml
from .data import read_tts_corpus, stable_fraction
from ..runtime.decision import default_hop_ms
from ..tools.evaluate import Prediction, classify_clip, expected_label, summarize
from ..runtime.fileio import atomic_write
from .train import TrainConfig, _resolve, train

log = logging.getLogger(__name__)

# Heard everywhere, so every custom model learns to ignore them (the default corpus's unknown words, plus
# the default vocabulary: a custom model must not fire on "stop" or "seven" either).
COMMON_WORDS = (
    "yes no up down left right on off stop go zero one two three four five six seven eight nine "
    "stock gone of noel app town lift own often top toe ten free tree fine sick heaven eighty none nun gun yet "
    "yeah note dawn light lights bright night nice nose under upon offer stopped goal zebra threw fork fight "
    "sticks seventy nineteen forty dog bed bird cat happy house marvin sheila wow learn follow forward visual "
    "backward hello okay please thanks coffee music water the and start open close play pause next back hey "
    "computer later maybe station street"
).split()

PHRASE_PATTERN = re.compile(r"^[a-z']+( [a-z']+)*$")


@dataclass(frozen=True)
class WordsConfig:
    """A custom-command recipe (the YAML form of `drsn-asr train-words`); every key but `phrases` is optional."""

    phrases: tuple[str, ...] = ()
    out: str = "custom_model.pt"
    negatives: tuple[str, ...] = ()  # words/phrases that must not trigger (your near-misses); always spoken
    base_model: str = "default"  # shipped name or checkpoint path: backbone, frontend and recipe come from it
    work_dir: str = "runs/words"  # corpus, example cache and checkpoints
    espeak_voices: int = 120  # espeak-ng voice variants drawn (of ~790)
    flite_renderings: int = 12  # renderings per voice (each at its own rate and pitch)
    festival_renderings: int = 15
    pico_renderings: int = 20
    piper_renderings: int = 40
    common_word_share: float = 0.25  # share of renderings that also speak each common word
    sentences_dir: str | None = "../shared/data/command-sentences/clean"  # real non-keyword speech; skipped if absent
    epochs: int = 12  # 8 coffee orders on the previous default: held-out voices 92.9% after 5 epochs, 97.3% after 12
    lr: float = 1e-3  # peak learning rate (the base model trained at 3e-3 from scratch)
    max_phrase_s: float = 1.0  # longest phrase after trimming; longer renderings are sped up (≤1.3×) or dropped
    seed: int = 0
    workers: int = 2  # TTS worker processes
    threads: int = 0  # torch CPU threads for training (0 = torch's default)


def normalise_phrase(text: str) -> str:
    """Lower case, single spaces; letters, apostrophes and spaces only (numbers must be written as words)."""
    phrase = " ".join(str(text).lower().split())
    if not phrase:
        raise ValueError("an empty phrase was given; pass each command as a non-empty string")
    if not PHRASE_PATTERN.match(phrase):
        raise ValueError(f"phrase {text!r}: use letters, spaces and apostrophes only (write numbers as words, "
                         "e.g. 'channel four')")
    return phrase


def check_config(cfg: WordsConfig) -> WordsConfig:
    """Normalised phrases and negatives; raises ValueError with what to change."""
    if not cfg.phrases:
        raise ValueError("no phrases: give at least one command, e.g. drsn-asr train-words \"lights on\" --out m.pt")
    phrases = tuple(normalise_phrase(p) for p in cfg.phrases)
    duplicates = sorted({p for p in phrases if phrases.count(p) > 1})
    if duplicates:
        raise ValueError(f"phrases given twice: {duplicates}")
    negatives = tuple(dict.fromkeys(normalise_phrase(n) for n in cfg.negatives))
    clash = sorted(set(phrases) & set(negatives))
    if clash:
        raise ValueError(f"{clash} are both phrases and negatives; remove them from one list")
    if not 0.0 <= cfg.common_word_share <= 1.0:
        raise ValueError(f"common_word_share must be in 0..1, got {cfg.common_word_share}")
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {cfg.epochs}")
    return dataclasses.replace(cfg, phrases=phrases, negatives=negatives)


def load_words_config(path: str | Path, overrides: dict[str, Any] | None = None) -> WordsConfig:
    """Read a train-words YAML (keys of WordsConfig); unknown keys and wrong types are errors."""
    data = load_yaml(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return check_config(from_dict(WordsConfig, data))


def sub_phrases(phrase: str) -> list[str]:
    """Every shorter run of consecutive words of `phrase` ("turn the light" → turn, the, light, turn the, ...)."""
    words = phrase.split()
    return [" ".join(words[i : i + n]) for n in range(1, len(words)) for i in range(len(words) - n + 1)]


def corpus_config(cfg: WordsConfig) -> corpus.CorpusConfig:
    """What to render: the phrases, their parts and the negatives in every rendering; common words in a share."""
    spoken = list(cfg.phrases)
    for phrase in cfg.phrases:
        spoken += [p for p in sub_phrases(phrase) if p not in spoken]
    spoken += [n for n in cfg.negatives if n not in spoken]
    common = tuple(w for w in COMMON_WORDS if w not in spoken)
    engines = {
        "espeak": corpus.EngineConfig(max_voices=cfg.espeak_voices, variants_per_voice=1 if cfg.espeak_voices else 0),
        "flite": corpus.EngineConfig(variants_per_voice=cfg.flite_renderings),
        "festival": corpus.EngineConfig(variants_per_voice=cfg.festival_renderings),
        "pico": corpus.EngineConfig(variants_per_voice=cfg.pico_renderings),
        "piper": corpus.EngineConfig(variants_per_voice=cfg.piper_renderings),
    }
    return corpus.CorpusConfig(
        keywords=tuple(spoken), unknown_words=common,
        engines={k: v for k, v in engines.items() if v.variants_per_voice > 0},
        seed=1234 + cfg.seed, max_duration_s=cfg.max_phrase_s, unknown_keep=cfg.common_word_share,
        workers=cfg.workers,
    )


def run_dir(cfg: WordsConfig, base: Path = Path(".")) -> Path:
    """`work_dir/<key>`: one folder per (phrases, negatives, base model, seed), so a rerun resumes its own run."""
    key = hashlib.sha1(json.dumps([cfg.phrases, cfg.negatives, cfg.base_model, cfg.seed]).encode()).hexdigest()[:10]
    return _resolve(cfg.work_dir, base) / key


def _existing(paths: tuple[str, ...], base: Path) -> tuple[str, ...]:
    out = []
    for p in paths:
        path = _resolve(p, base)
        if path.is_file():
            out.append(str(path))
        else:
            log.warning("noise file %s of the base recipe is not here; training without it", path)
    return tuple(out)


def train_config(cfg: WordsConfig, base: Path = Path(".")) -> TrainConfig:
    """The base model's own recipe, pointed at the new corpus and vocabulary, starting from its weights."""
    model = load_model(cfg.base_model, device="cpu")
    recipe = model.training.get("config")
    base_cfg = from_dict(TrainConfig, recipe) if recipe else TrainConfig()
    work = run_dir(cfg, base)
    sentences = cfg.sentences_dir
    if sentences and not _resolve(sentences, base).is_dir():
        log.warning("sentences_dir %s is not here: no real non-keyword speech in training", sentences)
        sentences = None
    real_commands = base_cfg.data.real_commands_dir  # the base's real speakers, heard here as other words
    if real_commands and not _resolve(real_commands, base).is_dir():
        log.warning("real_commands_dir %s of the base recipe is not here: training without its real speakers",
                    real_commands)
        real_commands = None
    data = dataclasses.replace(
        base_cfg.data,
        vocabulary=cfg.phrases,
        tts_dir=str(work / "corpus"),
        fsdd_dir=None,
        speech_commands_dir=None,
        real_commands_dir=real_commands,
        sentences_dir=sentences,
        sentences_as_unknown=sentences is not None,
        sentences_validation_part=(0.0, 0.0),  # validate on held-out voices only; real sentences ≥ 0.8 stay unseen
        tts_validation=True,  # the phrases are spoken by TTS voices only: a base recipe that validated on real
        # speakers alone (the speech-embedding default's) would choose the checkpoint on rejection alone
        # Only slot words are known for the sentences: a recording whose slots hold a word of a phrase is left
        # out (train.sentence_exclusions does it for every vocabulary).
        noise_files=_existing(base_cfg.data.noise_files, base),
        cache_dir=str(work / "cache"),
    )
    optim = dataclasses.replace(base_cfg.optim, epochs=cfg.epochs, lr=cfg.lr, warmup_epochs=min(0.3, cfg.epochs / 4),
                                seed=cfg.seed, threads=cfg.threads)
    return dataclasses.replace(base_cfg, data=data, features=model.features, model=model.net.config, optim=optim,
                               out_dir=str(work / "train"), init_from=cfg.base_model)


def _check_corpus(cfg: WordsConfig, rows: list[dict], n_renderings: int) -> None:
    for phrase in cfg.phrases:
        n = sum(r["word"] == phrase for r in rows)
        if n < 0.3 * n_renderings:
            raise ValueError(f"phrase {phrase!r}: only {n} of {n_renderings} renderings fit the model's "
                             f"{cfg.max_phrase_s:g} s window; use a shorter phrase (two or three short words)")


def held_out_report(model: LoadedModel, corpus_dir: Path, recipe: TrainConfig) -> dict[str, Any]:
    """Accuracy on the TTS voices kept out of training and validation (clean clips, the streaming rule)."""
    frontend = model.frontend()
    lo = recipe.data.validation_voice_fraction
    hi = lo + recipe.data.test_voice_fraction
    predictions = []
    for ex in read_tts_corpus(corpus_dir):
        if lo <= stable_fraction(ex.group) < hi:
            clip = classify_clip(model, frontend, read_audio(ex.path),
                                 DetectorConfig(hop_ms=default_hop_ms(model.features.hop_ms)))
            predictions.append(Prediction(ex.path, expected_label(ex.word, model.labels), clip.predicted,
                                          round(clip.score, 4), clip.top1))
    return summarize(predictions, model.labels)


def train_words(cfg: WordsConfig, base: Path = Path("."), device: str | None = None, progress: bool = True) -> dict:
    """Build the corpus, fine-tune, write `cfg.out`; returns a report (held-out accuracy, corpus counts, timing)."""
    cfg = check_config(cfg)
    t0 = time.monotonic()
    recipe = train_config(cfg, base)
    corpus_dir = Path(recipe.data.tts_dir)
    spec = corpus_config(cfg)
    jobs, _ = corpus.plan(spec)
    if not jobs:
        raise ValueError("no TTS engine is installed: install espeak-ng (./install.sh does) and try again")
    rows, stats = corpus.build(spec, corpus_dir, progress=progress)
    _check_corpus(cfg, rows, len(jobs))
    t_corpus = time.monotonic() - t0
    best = train(recipe, base=base, device=device, progress=progress)
    t_train = time.monotonic() - t0 - t_corpus
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        shutil.copyfile(best, tmp)
    model = load_model(out, device="cpu")
    report = held_out_report(model, corpus_dir, recipe)
    summary = {
        "model": str(out),
        "labels": model.labels,
        "renderings": len(jobs),
        "clips": len(rows),
        "corpus_s": round(t_corpus, 1),
        "train_s": round(t_train, 1),
        "held_out_voices": {k: report[k] for k in ("accuracy", "keyword_accuracy", "unknown_rejection", "n_clips",
                                                   "per_class")},
        "corpus_counts": dict(stats),
    }
    with atomic_write(Path(recipe.out_dir) / "report.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary
