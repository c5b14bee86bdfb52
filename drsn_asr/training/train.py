"""Training: a YAML recipe → a cached set of clean 1 s examples → noisy, SpecAugmented batches → checkpoints.

Clean speech (augmented copies included) is prepared once and cached; noise is mixed in per batch at a random
SNR, so every epoch hears new noise. Validation uses held-out TTS voices and held-out sentence recordings.
Runs on CPU or GPU; under `torchrun` it trains with DistributedDataParallel.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import augment
from . import noise
from ..runtime.audio import SAMPLE_RATE, read_audio
from ..runtime.checkpoint import read_checkpoint, resolve_device, save_checkpoint, sha256
from ..runtime.config import LABEL_SILENCE, LABEL_UNKNOWN, SPEECH_EMBEDDING_FRAME, FeatureConfig, ModelConfig, from_dict, load_yaml, to_dict
from .data import (
    Example,
    NoisyBatches,
    examples_sha256,
    fit_window,
    load_example,
    label_for,
    REAL_COMMANDS_TEST_PART,
    read_fsdd,
    read_real_commands,
    read_sentences,
    read_speech_commands,
    read_tts_corpus,
    speech_commands_noise,
    stable_fraction,
)
from ..runtime.features import EmbeddingWithLogMel, make_frontend
from ..runtime.fileio import atomic_write
from ..runtime.model import KeywordNet, build_net, count_parameters

log = logging.getLogger(__name__)

VOCABULARY = (
    "yes no up down left right on off stop go zero one two three four five six seven eight nine".split()
)


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they are split."""

    vocabulary: tuple[str, ...] = tuple(VOCABULARY)
    tts_dir: str | None = "data/corpus/tts"
    fsdd_dir: str | None = "../shared/data/fsdd/recordings"
    fsdd_train_speakers: tuple[str, ...] = ("jackson", "nicolas")
    fsdd_validation_speakers: tuple[str, ...] = ()  # real speakers whose digits validate (never trained on)
    sentences_dir: str | None = "../shared/data/command-sentences/clean"
    sentences_train_part: tuple[float, float] = (0.0, 0.8)
    sentences_validation_part: tuple[float, float] = (0.8, 0.9)
    sentences_as_unknown: bool = True  # False: real sentences only feed the babble noise, not the _unknown_ class
    sentences_exclude: tuple[str, ...] = ()  # leave out sentences whose labels mention these words, besides the vocabulary's
    speech_commands_dir: str | None = None  # Google Speech Commands root: uses its own split lists
    real_commands_dir: str | None = None  # real speakers in Speech Commands layout, split by speaker (read_real_commands)
    real_commands_train_part: tuple[float, float] = (0.0, 0.6)  # speakers (by id hash) trained on
    real_commands_validation_part: tuple[float, float] = (0.6, 0.8)  # ... that validate; REAL_COMMANDS_TEST_PART is the test set
    tts_validation: bool = True  # False: held-out TTS voices do not validate (the checkpoint is chosen on real voices)
    noise_files: tuple[str, ...] = ()
    noise_kinds: tuple[str, ...] = ("car_horn", "traffic_passby", "engine", "road_rumble", "babble")
    noise_pool_s: float = 600.0
    validation_voice_fraction: float = 0.1  # TTS voices with hash in [0, this) validate
    test_voice_fraction: float = 0.1  # ... and in [validation, validation + this) are never used: the test set
    augment_copies: int = 2  # augmented copies of each TTS clip, besides the clean one
    real_augment_copies: int = 1  # augmented copies of each real keyword clip (FSDD, Speech Commands)
    silence_fraction: float = 0.08  # silence examples as a fraction of all examples
    max_examples_per_word: int = 100000
    cache_dir: str = "data/cache"


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation and SpecAugment settings."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-3
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.05
    snr_range_db: tuple[float, float] = (-10.0, 20.0)
    gain_range_db: tuple[float, float] = (-30.0, 6.0)  # random level of the whole noisy mix
    p_clean: float = 0.1
    freq_masks: int = 2
    freq_mask_mels: int = 6
    time_masks: int = 2
    time_mask_frames: int = 10
    time_shift_ms: float = 100.0
    unknown_weight: float = 2.0  # share of unknown in a batch, relative to one keyword
    silence_weight: float = 1.0
    p_second_noise: float = 0.0  # share of training examples with a second noise segment added to the first
    second_noise_db: tuple[float, float] = (-10.0, 0.0)  # its level relative to the first
    ema_decay: float = 0.0  # exponential moving average of the weights, validated and saved (0 = off)
    seed: int = 0
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    frontend_views: int = 0  # >0: a frozen frontend's frames of this many noisy renditions per example, computed once
    amp: bool = True  # mixed precision on CUDA


@dataclass(frozen=True)
class TrainConfig:
    """A whole training recipe, as read from configs/*.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: augment.AugmentConfig = field(default_factory=augment.AugmentConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = "runs/default"
    init_from: str | None = None  # start from this model's weights (shipped name or checkpoint path): fine-tuning


def load_train_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a recipe; `overrides` like {"optim": {"epochs": 3}} are merged before validation.

    A recipe may start with `extends: OTHER.yaml` (relative to its own folder): it is then OTHER's recipe with the
    keys it gives replaced, section by section, as overrides are."""
    return from_dict(TrainConfig, _merge(_read_recipe(Path(path), ()), overrides or {}))


def _read_recipe(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = load_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: extends must be the path of another recipe, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ValueError(f"{path}: extends {base} makes a cycle of recipes ({' → '.join(map(str, seen))})")
    return _merge(_read_recipe(base_path, (*seen, path.resolve())), data)


def _merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section].update(values)
        else:
            out[section] = values
    return out


def labels_for(vocabulary: tuple[str, ...]) -> list[str]:
    """Class labels of a model: the vocabulary, then `_unknown_`, then `_silence_`."""
    return [*vocabulary, LABEL_UNKNOWN, LABEL_SILENCE]


def _resolve(path: str | None, base: Path) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else (base / p)


def sentence_exclusions(cfg: DataConfig) -> tuple[str, ...]:
    """Words whose sentences are no `_unknown_` examples: every word of the vocabulary (a real sentence that says
    "eight ounce" holds a real "eight"), plus `sentences_exclude`."""
    return tuple(sorted({w for phrase in cfg.vocabulary for w in phrase.split()} | set(cfg.sentences_exclude)))


def collect_examples(cfg: DataConfig, base: Path) -> dict[str, list[Example]]:
    """Train and validation examples from every configured source, split by voice/speaker/recording."""
    both = sorted(set(cfg.fsdd_train_speakers) & set(cfg.fsdd_validation_speakers))
    if both:
        raise ValueError(f"data.fsdd_validation_speakers {both} are also in data.fsdd_train_speakers: a speaker "
                         "validates only if never trained on; take them out of one list")
    train: list[Example] = []
    validation: list[Example] = []
    if cfg.tts_dir:
        for ex in read_tts_corpus(_resolve(cfg.tts_dir, base)):
            h = stable_fraction(ex.group)
            if h < cfg.validation_voice_fraction:
                if cfg.tts_validation:
                    validation.append(ex)
            elif h >= cfg.validation_voice_fraction + cfg.test_voice_fraction:
                train.append(ex)
    if cfg.fsdd_dir:
        root = _resolve(cfg.fsdd_dir, base)
        train += read_fsdd(root, cfg.fsdd_train_speakers)
        if cfg.fsdd_validation_speakers:
            validation += read_fsdd(root, cfg.fsdd_validation_speakers)
    if cfg.sentences_dir and cfg.sentences_as_unknown:
        root, exclude = _resolve(cfg.sentences_dir, base), sentence_exclusions(cfg)
        train += read_sentences(root, part=cfg.sentences_train_part, exclude_words=exclude)
        validation += read_sentences(root, part=cfg.sentences_validation_part, exclude_words=exclude)
    if cfg.real_commands_dir:
        for part in (cfg.real_commands_train_part, cfg.real_commands_validation_part):
            if part[1] > REAL_COMMANDS_TEST_PART[0]:
                raise ValueError(f"data.real_commands_*_part {list(part)} reaches into the test speakers "
                                 f"{list(REAL_COMMANDS_TEST_PART)}: end it at {REAL_COMMANDS_TEST_PART[0]} or before")
        root = _resolve(cfg.real_commands_dir, base)
        train += read_real_commands(root, cfg.real_commands_train_part)
        validation += read_real_commands(root, cfg.real_commands_validation_part)
    if cfg.speech_commands_dir:
        root = _resolve(cfg.speech_commands_dir, base)
        train += read_speech_commands(root, "train")
        validation += read_speech_commands(root, "validation")
    rng = np.random.default_rng(0)
    capped = []
    by_word: dict[str, list[Example]] = {}
    for ex in train:
        by_word.setdefault(ex.word, []).append(ex)
    for word, exs in sorted(by_word.items()):
        if len(exs) > cfg.max_examples_per_word:
            exs = [exs[i] for i in sorted(rng.choice(len(exs), cfg.max_examples_per_word, replace=False))]
        capped += exs
    return {"train": capped, "validation": validation}


def _noise_files(cfg: DataConfig, base: Path) -> list[Path]:
    """The noise recordings of the pool, in the order they enter it."""
    files = [_resolve(file, base) for file in cfg.noise_files]
    if cfg.speech_commands_dir:
        files += speech_commands_noise(_resolve(cfg.speech_commands_dir, base))
    return files


def noise_files_sha256(cfg: DataConfig, base: Path) -> str:
    """SHA-256 of the noise recordings a recipe mixes in (each file's name and content, in pool order; not where
    they lie). The rest of the pool is synthesized from the recorded config and seed, so this and the config
    name the whole pool."""
    digest = hashlib.sha256()
    for file in _noise_files(cfg, base):
        digest.update(f"{file.name}\0{sha256(file)}\n".encode())
    return digest.hexdigest()


def _noise_pool(cfg: DataConfig, base: Path, sentences: list[np.ndarray], seed: int) -> torch.Tensor:
    """A long float16 noise signal: synthesized street scenes of the allowed kinds plus the noise files."""
    rng = np.random.default_rng(seed)
    parts = []
    for file in _noise_files(cfg, base):
        audio = read_audio(file)
        parts.append(audio / max(1e-8, float(np.sqrt(np.mean(audio**2)))) * 0.1)
    synth_s = max(0.0, cfg.noise_pool_s - sum(len(p) for p in parts) / SAMPLE_RATE)
    scene_s = 10.0
    kinds = list(cfg.noise_kinds)
    for _ in range(math.ceil(synth_s / scene_s)):  # a pool shorter than one scene still gets one
        parts.append(noise.street_scene(scene_s, SAMPLE_RATE, rng, kinds=kinds, speech=sentences))
    return torch.from_numpy(np.concatenate(parts).astype(np.float16))


def _cache_key(cfg: TrainConfig, examples: dict[str, list[Example]]) -> str:
    # optim.seed draws the augmentation and the noise pool: a cache of one seed is not another's
    # and the window's length sizes every clip in it
    h = hashlib.sha1(json.dumps([to_dict(cfg.data), to_dict(cfg.augment), cfg.optim.seed, cfg.model.window_s],
                                sort_keys=True).encode())
    for split in sorted(examples):
        for ex in examples[split]:
            # absolute, so that `train` run from the checkout (base ".") and a script that passes the checkout's
            # absolute path find the same cache instead of preparing a second 3.6 GB one
            h.update(f"{os.path.abspath(ex.path)}|{ex.offset_s}|{ex.word}".encode())
    return h.hexdigest()[:16]


def prepare_data(cfg: TrainConfig, base: Path, progress: bool = True) -> dict[str, Any]:
    """Clean int16 windows, their active RMS and labels for train and validation, plus a noise pool (cached),
    and the fingerprints of the examples they were cut from and of the noise recordings in the pool
    (`examples_sha256`, `noise_files_sha256`)."""
    from tqdm import tqdm

    examples = collect_examples(cfg.data, base)
    key = _cache_key(cfg, examples)
    cache = _resolve(cfg.data.cache_dir, base) / f"{key}.pt"
    if cache.is_file():
        log.info("using cached examples %s", cache)
        kept = torch.load(cache, weights_only=True)
        kept["cache_key"] = key
        if "examples_sha256" not in kept:  # a cache written before the fingerprint was kept in it
            kept["examples_sha256"] = examples_sha256(examples)
        if "noise_files_sha256" not in kept:
            kept["noise_files_sha256"] = noise_files_sha256(cfg.data, base)
        return kept
    labels = labels_for(cfg.data.vocabulary)
    index = {label: i for i, label in enumerate(labels)}
    rng = np.random.default_rng(cfg.optim.seed)
    n_samples = round(cfg.model.window_s * SAMPLE_RATE)
    out: dict[str, Any] = {"labels": labels}
    negatives: list[np.ndarray] = []
    tts_negatives: list[np.ndarray] = []  # babble of synthetic talkers when there is no real speech
    for split, exs in examples.items():
        clips, rms, ys = [], [], []
        copies = {"tts": 1 + cfg.data.augment_copies, "sentences": 1}  # any other source is real keyword speech
        for ex in tqdm(exs, desc=f"preparing {split}", disable=not progress, mininterval=2):
            audio = read_audio(ex.path)
            if ex.offset_s:
                start = round(ex.offset_s * SAMPLE_RATE)
                audio = audio[start : start + n_samples]
                if split == "train" and len(negatives) < 400 and np.sqrt(np.mean(audio**2)) > 1e-3:
                    negatives.append(audio)
            elif split == "train" and ex.source == "tts" and len(tts_negatives) < 400:
                if label_for(ex.word, cfg.data.vocabulary) == LABEL_UNKNOWN:
                    tts_negatives.append(audio)
            for copy in range(1 if split == "validation" else copies.get(ex.source, 1 + cfg.data.real_augment_copies)):
                x = audio if copy == 0 else augment.random_augment(audio, SAMPLE_RATE, rng, cfg.augment)
                x = fit_window(x.astype(np.float32, copy=False), n_samples, rng)
                peak = float(np.abs(x).max(initial=0.0))
                if peak > 0.99:  # keep gain augmentation from clipping in the int16 cache
                    x = x * (0.99 / peak)
                clips.append(np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))
                rms.append(augment.active_rms(x, SAMPLE_RATE))
                ys.append(index[label_for(ex.word, cfg.data.vocabulary)])
        n_silence = int(len(clips) * cfg.data.silence_fraction)
        clips += [np.zeros(n_samples, np.int16)] * n_silence
        rms += [0.0] * n_silence
        ys += [index[LABEL_SILENCE]] * n_silence
        out[split] = {
            "speech": torch.from_numpy(np.stack(clips)) if clips else torch.zeros(0, n_samples, dtype=torch.int16),
            "rms": torch.tensor(rms, dtype=torch.float32),
            "labels": torch.tensor(ys, dtype=torch.long),
        }
    if not negatives and cfg.data.sentences_dir:  # babble from real sentences even when they are not examples
        root = _resolve(cfg.data.sentences_dir, base)
        for ex in read_sentences(root, part=cfg.data.sentences_train_part, exclude_words=sentence_exclusions(cfg.data))[::4][:400]:
            audio = load_example(ex)
            if np.sqrt(np.mean(audio**2)) > 1e-3:
                negatives.append(audio)
    negatives = negatives or tts_negatives
    out["noise"] = _noise_pool(cfg.data, base, negatives, cfg.optim.seed)
    # kept in the cache: the key does not follow the files' content, so it names what these windows were cut from
    out["examples_sha256"] = examples_sha256(examples)
    out["noise_files_sha256"] = noise_files_sha256(cfg.data, base)
    with atomic_write(cache) as tmp:  # a run stopped mid-write must not leave a cache that looks complete
        torch.save(out, tmp)
    out["cache_key"] = key
    return out


def spec_augment(x: torch.Tensor, cfg: OptimConfig, generator: torch.Generator) -> torch.Tensor:
    """Zero random mel bands and frame spans (SpecAugment masks), in place of the batch's mean value."""
    b, n_mels, n_frames = x.shape
    fill = x.detach().mean()  # a constant: no gradient flows through the fill
    mels = torch.arange(n_mels, device=x.device)[None, :, None]
    frames = torch.arange(n_frames, device=x.device)[None, None, :]
    mask = torch.zeros_like(x, dtype=torch.bool)
    for _ in range(cfg.freq_masks):
        width = torch.randint(0, cfg.freq_mask_mels + 1, (b, 1, 1), generator=generator).to(x.device)
        start = (torch.rand(b, 1, 1, generator=generator).to(x.device) * (n_mels - width)).long()
        mask |= (mels >= start) & (mels < start + width)
    for _ in range(cfg.time_masks):
        width = torch.randint(0, cfg.time_mask_frames + 1, (b, 1, 1), generator=generator).to(x.device)
        start = (torch.rand(b, 1, 1, generator=generator).to(x.device) * (n_frames - width)).long()
        mask |= (frames >= start) & (frames < start + width)
    return x.masked_fill(mask, float(fill))


# the optim settings that draw frontend_views' renditions (sampling weights, learning rate... do not)
VIEW_KEYS = ("frontend_views", "seed", "snr_range_db", "p_clean", "gain_range_db", "p_second_noise", "second_noise_db",
             "time_shift_ms")


@torch.no_grad()
def frontend_views(frontend: Callable[[torch.Tensor], torch.Tensor], mix: NoisyBatches, n: int, shift: int,
                   cfg: OptimConfig, device: torch.device, progress: bool) -> torch.Tensor:
    """Frames (views, n, n_mels, n_frames) float16 of `cfg.frontend_views` noisy renditions of every training
    example, each with its own noise, SNR, gain and time shift: for a frozen frontend too costly to run on every
    batch (the speech embedding), training draws one rendition per example and step instead of mixing anew.
    With as many views as epochs this is the same amount of fresh noise as mixing in the loop."""
    from tqdm import tqdm

    out = []
    for v in range(cfg.frontend_views):
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + 104729 + v)  # apart from the epochs' streams
        parts = []
        for start in tqdm(range(0, n, 256), desc=f"frontend view {v + 1}/{cfg.frontend_views}", disable=not progress,
                          mininterval=5):
            audio = mix.mix(torch.arange(start, min(start + 256, n)), generator)
            if shift:
                audio = torch.roll(audio, int(torch.randint(-shift, shift + 1, (1,), generator=generator)), dims=1)
            parts.append(frontend(audio.to(device)).half().cpu())
        out.append(torch.cat(parts))
    return torch.stack(out)


def recipe_frontend_cnn(cfg: TrainConfig) -> dict | None:
    """The speech-embedding CNN a recipe trains on when its features.embedding_cnn is "checkpoint": the one its
    `init_from` model carries (fine-tuning a model with its own CNN, as custom words do); else None."""
    if cfg.features.embedding_cnn != "checkpoint":
        return None
    if not cfg.init_from:
        raise ValueError("features.embedding_cnn 'checkpoint' takes its CNN from the init_from model: set init_from "
                         "to a model that carries one, or use embedding_cnn 'pretrained'")
    from ..runtime.checkpoint import load_model

    cnn = load_model(cfg.init_from, device="cpu").frontend_cnn
    if cnn is None:
        raise ValueError(f"init_from={cfg.init_from!r} carries no frontend_cnn, but features.embedding_cnn is "
                         "'checkpoint'; use embedding_cnn 'pretrained' for it")
    return cnn


def views_key(cfg: TrainConfig, frontend_cnn: dict | None = None) -> str:
    """What makes a recipe's `frontend_views`: its frontend and the optim settings that draw the renditions."""
    features = to_dict(cfg.features)
    # The CNN's weights make the frames, so a model's own CNN keys them; the package's is the same everywhere, and
    # leaving the field out for it keeps the views cached before it existed (16 minutes to recompute).
    features.pop("embedding_cnn")
    if frontend_cnn is not None:
        features["embedding_cnn"] = cnn_digest(frontend_cnn)
    return json.dumps([features, *(to_dict(cfg.optim)[k] for k in VIEW_KEYS)])


def cnn_digest(frontend_cnn: dict) -> str:
    """SHA-256 of a `frontend_cnn` record's weights."""
    return hashlib.sha256(b"".join(w.numpy().tobytes() for w in frontend_cnn["weights"])).hexdigest()


def _training_views(cfg: TrainConfig, base: Path, data: dict, frontend: nn.Module, mix: NoisyBatches, shift: int,
                    device: torch.device, progress: bool, frontend_cnn: dict | None = None) -> torch.Tensor:
    """`frontend_views` of the training split, kept on disk beside the examples' cache so that a second head on
    the same data and seed (the ablation) reuses them. The fused frontend (embedding + log-mel) reuses the plain
    embedding's views, since the renditions depend only on the seed and noise settings, and replays the same
    renditions for its cheap log-mel rows."""
    n = len(data["train"]["labels"])
    if isinstance(frontend, EmbeddingWithLogMel):
        embedding_cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, kind="speech_embedding",
                                                                             **SPEECH_EMBEDDING_FRAME))
        embedded = _training_views(embedding_cfg, base, data, frontend.embedding, mix, shift, device, progress)
        summary = frontend_views(frontend.summary, mix, n, shift, cfg.optim, device, progress)
        return torch.cat([embedded, summary], dim=2)
    own = "" if frontend_cnn is None else f"_{cnn_digest(frontend_cnn)[:12]}"  # (beside the package CNN's, not over it)
    views_cache = _resolve(cfg.data.cache_dir, base) / f"{data['cache_key']}_{cfg.features.kind}{own}_views.pt"
    keyed = views_key(cfg, frontend_cnn)
    cached = torch.load(views_cache, weights_only=True) if views_cache.is_file() else None
    if cached is not None and cached["key"] == keyed:
        return cached["views"]
    views = frontend_views(frontend, mix, n, shift, cfg.optim, device, progress)
    with atomic_write(views_cache) as tmp:
        torch.save({"key": keyed, "views": views}, tmp)
    return views


class FrozenFrames:
    """A split's frames through a frozen frontend, computed once with `evaluate_split`'s fixed noise and batching;
    `mix` returns them by index, so `evaluate_split(net, nn.Identity(), FrozenFrames(...), ...)` scores exactly
    what it would with the frontend in the loop."""

    @torch.no_grad()
    def __init__(self, frontend: nn.Module, batches: NoisyBatches, n: int, device: torch.device):
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        parts = [frontend(batches.mix(torch.arange(start, min(start + 512, n)), generator).to(device)).cpu()
                 for start in range(0, n, 512)]
        self.frames = torch.cat(parts) if parts else torch.zeros(0)

    def mix(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.frames[index]


def _sampling_weights(labels: torch.Tensor, names: list[str], cfg: OptimConfig) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=len(names)).float().clamp_min(1)
    share = torch.ones(len(names))
    share[names.index(LABEL_UNKNOWN)] = cfg.unknown_weight
    share[names.index(LABEL_SILENCE)] = cfg.silence_weight
    return (share / counts)[labels]


def initialise_from(net: KeywordNet, labels: list[str], base_name: str) -> None:
    """Copy a trained model's weights into `net`: the whole backbone, and the classifier rows of shared labels.

    The base must have the same architecture and frontend. Rows of labels the base lacks (new commands) keep
    their fresh initialisation; `_unknown_` and `_silence_` start from what the base learned.
    """
    from ..runtime.checkpoint import load_model

    base = load_model(base_name, device="cpu")
    if base.net.config != net.config or base.features != net.features:
        raise ValueError(f"init_from={base_name!r}: its architecture or frontend differs from the recipe's "
                         "model/features sections; copy them from the base model's checkpoint")
    state = {k: v for k, v in base.net.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"fc.weight", "fc.bias"}, (missing, unexpected)
    with torch.no_grad():
        for i, label in enumerate(labels):
            if label in base.labels:
                j = base.labels.index(label)
                net.fc.weight[i] = base.net.fc.weight[j]
                net.fc.bias[i] = base.net.fc.bias[j]


class WeightAverage:
    """Exponential moving average of a network's weights and BatchNorm statistics (as timm's ModelEmaV2).

    The averaged copy is what gets validated and saved (with the shipped recipe, at the last epoch it scored as
    the last step's weights did: 0.8237 against 0.8238). The decay ramps up as (1 + n) / (10 + n) over the first
    updates, so the start-up weights fade quickly.
    """

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1) or 0 to turn it off, got {decay}")
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self.decay, self.n_updates = decay, 0

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Move the average towards `net`'s current weights."""
        self.n_updates += 1
        decay = min(self.decay, (1 + self.n_updates) / (10 + self.n_updates))
        for mine, theirs in zip(self.module.state_dict().values(), net.state_dict().values()):
            if mine.dtype.is_floating_point:
                mine.lerp_(theirs, 1.0 - decay)
            else:  # BatchNorm's batch counter
                mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}, "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.n_updates = int(state["n_updates"])


VALIDATION_SEED = 1234  # the validation noise: the same every epoch and in pipelines/validate.py


def validation_batches(data: dict[str, Any]) -> NoisyBatches:
    """The validation split of `prepare_data`'s output with noise at 0–20 dB, 20% left clean."""
    va = data["validation"]
    return NoisyBatches(va["speech"], va["rms"], data["noise"], (0.0, 20.0), 0.2)


def _lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_split(
    net: nn.Module, frontend: nn.Module, batches: NoisyBatches, labels: torch.Tensor, names: list[str],
    device: torch.device, seed: int,
) -> dict[str, float]:
    """A split's figures with its noise mixed in by a fixed generator (the same noise every epoch).

    `accuracy` is over all examples. `score`, which picks the best epoch, is what a user of the recognizer sees:
    the mean of `keyword_accuracy` (keyword examples given their keyword) and `rejection` (other speech and noise
    given `_unknown_` or `_silence_`, either of which fires nothing). Plain accuracy let the `_unknown_` vs
    `_silence_` choice on non-keyword examples — two thirds of the default validation set — swing it by 15
    points from one epoch to the next while keyword accuracy stood still.
    """
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    predicted = []
    for start in range(0, len(labels), 512):
        index = torch.arange(start, min(start + 512, len(labels)))
        predicted.append(net(frontend(batches.mix(index, generator).to(device))).argmax(1).cpu())
    if not predicted:
        return {"accuracy": 0.0, "keyword_accuracy": 0.0, "rejection": 0.0, "score": 0.0}
    predicted = torch.cat(predicted)
    rest = torch.tensor([names.index(LABEL_UNKNOWN), names.index(LABEL_SILENCE)])
    is_keyword = ~torch.isin(labels, rest)
    keyword_accuracy = (predicted == labels)[is_keyword].float().mean().item() if is_keyword.any() else 0.0
    rejection = torch.isin(predicted[~is_keyword], rest).float().mean().item() if (~is_keyword).any() else 0.0
    parts = [v for v, present in ((keyword_accuracy, is_keyword.any()), (rejection, (~is_keyword).any())) if present]
    score = sum(parts) / len(parts)
    return {"accuracy": (predicted == labels).float().mean().item(), "keyword_accuracy": keyword_accuracy,
            "rejection": rejection, "score": score}


def train(cfg: TrainConfig, base: Path = Path("."), device: str | None = None, progress: bool = True) -> Path:
    """Run a recipe; returns the path of the best checkpoint. Resumes from `out_dir/last.pt` if present."""
    from tqdm import tqdm

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    rank = int(os.environ.get("RANK", 0))
    if distributed:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    dev = resolve_device(device)
    if cfg.optim.threads:
        torch.set_num_threads(cfg.optim.threads)
    torch.manual_seed(cfg.optim.seed)
    out_dir = _resolve(cfg.out_dir, base)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg, base, progress=progress and rank == 0)
    names: list[str] = data["labels"]
    tr, va = data["train"], data["validation"]
    train_mix = NoisyBatches(tr["speech"], tr["rms"], data["noise"], cfg.optim.snr_range_db, cfg.optim.p_clean,
                             gain_range_db=cfg.optim.gain_range_db, p_second_noise=cfg.optim.p_second_noise,
                             second_noise_db=cfg.optim.second_noise_db)
    val_mix = validation_batches(data)

    frontend_cnn = recipe_frontend_cnn(cfg)
    frontend = make_frontend(cfg.features, frontend_cnn, source=f"init_from={cfg.init_from!r}").to(dev)
    shift = round(cfg.optim.time_shift_ms * SAMPLE_RATE / 1000)
    views = None
    if cfg.optim.frontend_views:
        views = _training_views(cfg, base, data, frontend, train_mix, shift, dev, progress and rank == 0, frontend_cnn)
    val_frontend: nn.Module = frontend
    if views is not None:  # the same validation noise every epoch (a fixed generator): its frames once, too
        val_mix, val_frontend = FrozenFrames(frontend, val_mix, len(va["labels"]), dev), nn.Identity()
    net = build_net(cfg.model, cfg.features, len(names))
    if cfg.init_from:
        initialise_from(net, names, cfg.init_from)
    net = net.to(dev)
    model: nn.Module = net
    if distributed:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = max(1, len(tr["labels"]) // cfg.optim.batch_size)
    total_steps = steps_per_epoch * cfg.optim.epochs
    warmup_steps = int(cfg.optim.warmup_epochs * steps_per_epoch)
    use_amp = cfg.optim.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    ema = WeightAverage(net, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    start_epoch, best, history = 0, -1.0, []
    last = out_dir / "last.pt"
    if last.is_file():
        state = read_checkpoint(last)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"{last} was written without optim.ema_decay: resume with the recipe that wrote "
                                 "it, or delete it to start again")
            ema.load_state_dict(state["ema"])
        # (a run written before the score picked the best epoch starts its choice afresh)
        start_epoch, best, history = state["epoch"], state.get("best_score", -1.0), list(state["history"])
        log.info("resuming from %s at epoch %d", last, start_epoch)
    weights = _sampling_weights(tr["labels"], names, cfg.optim)
    meta = {"config": to_dict(cfg), "n_parameters": count_parameters(net), "n_train": len(tr["labels"]),
            "examples_sha256": data["examples_sha256"], "noise_files_sha256": data["noise_files_sha256"],
            "world_size": int(os.environ.get("WORLD_SIZE", 1)), "device": dev.type, "mixed_precision": use_amp}
    for epoch in range(start_epoch, cfg.optim.epochs):
        generator = torch.Generator().manual_seed(cfg.optim.seed * 1000 + epoch)
        order = torch.multinomial(weights, steps_per_epoch * cfg.optim.batch_size, replacement=True, generator=generator)
        if distributed:
            order = order[rank :: int(os.environ["WORLD_SIZE"])]
        model.train()
        t0, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        bar = tqdm(range(0, len(order), cfg.optim.batch_size), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                   disable=not progress or rank != 0, mininterval=1)
        for i, start in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_steps, warmup_steps, cfg.optim.lr)
            index = order[start : start + cfg.optim.batch_size]
            if views is None:
                audio = train_mix.mix(index, generator)
                if shift:
                    audio = torch.roll(audio, int(torch.randint(-shift, shift + 1, (1,), generator=generator)), dims=1)
            else:
                view = torch.randint(0, len(views), (len(index),), generator=generator)
            y = tr["labels"][index].to(dev)
            with torch.autocast(dev.type, enabled=use_amp):
                x = frontend(audio.to(dev)) if views is None else views[view, index].to(dev).float()
                x = spec_augment(x, cfg.optim, generator)
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.optim.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(net)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if rank != 0:
            continue
        kept = net if ema is None else ema.module  # the weights that are validated are the weights that are saved
        val = evaluate_split(kept, val_frontend, val_mix, va["labels"], names, dev, seed=VALIDATION_SEED)
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                 **{f"validation_{k}": v for k, v in val.items()},
                 "seconds": time.time() - t0, "clips_per_s": seen / (time.time() - t0)}
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1, entry)
        if progress:
            print(json.dumps(entry), flush=True)
        if val["score"] > best or not len(va["labels"]):  # no validation set (tiny corpora): keep the latest
            best = val["score"]
            save_checkpoint(out_dir / "best.pt", kept, names,
                            {**meta, "epoch": epoch + 1, **{f"validation_{k}": v for k, v in val.items()}}, frontend_cnn)
        save_checkpoint(last, net, names, meta, frontend_cnn, optimizer=optimizer.state_dict(), epoch=epoch + 1,
                        best_score=best, history=history, **({} if ema is None else {"ema": ema.state_dict()}))
    if distributed:  # every rank here before any tears down: a gloo peer destroyed while another still saves
        torch.distributed.barrier()  # its checkpoint aborted now and then (SIGABRT, "terminate called ...")
        torch.distributed.destroy_process_group()
    if rank == 0:  # the other ranks keep no history
        with atomic_write(out_dir / "history.json") as tmp:
            tmp.write_text(json.dumps(history, indent=1))
    return out_dir / "best.pt"
