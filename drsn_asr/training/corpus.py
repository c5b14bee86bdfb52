"""Synthetic speech corpus: every installed TTS voice speaks the keywords and a share of the unknown
words, each cut out of a carrier phrase (see drsn_asr/training/tts.py). Used by pipelines/build_corpus.py (the
default model's corpus) and by `drsn-asr train-words` (custom phrases).

Writes <out>/<word>/<engine>__<voice>__v<k>.wav (16 kHz mono int16) and <out>/manifest.csv
(path relative to <out>, word, engine, voice, rate, pitch, licence, duration_s). Reproducible:
every rendering draws its rate, pitch and unknown words from a seed derived from
(seed, engine, voice, variant), so adding voices does not change the others, and every engine renders
the same waveforms in any process (tests/test_tts.py), so a fresh build is the same bit for bit. Resumable: files
already present are kept and only listed; files are written atomically. (Piper's noise is seeded by the batch of
words a rendering speaks, so a rendering resumed with only some of its words left gives those words other noise.) The manifest is rewritten
every few percent of the way, so a partial corpus is usable while the build runs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import yaml

from . import tts
from .data import digest_of, file_digests

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "word", "engine", "voice", "rate", "pitch", "licence", "duration_s"]


@dataclass(frozen=True)
class EngineConfig:
    max_voices: int = 0  # 0 = all voices of the engine
    variants_per_voice: int = 1


@dataclass(frozen=True)
class CorpusConfig:
    keywords: tuple[str, ...]
    unknown_words: tuple[str, ...]
    engines: dict[str, EngineConfig]
    seed: int = 1234
    out: str = "data/corpus/tts"
    sample_rate: int = 16000
    carrier: str = "I said"
    max_duration_s: float = 1.0
    max_speedup: float = 1.3
    min_duration_s: float = 0.1
    rate_range: tuple[float, float] = (0.8, 1.25)
    pitch_range: tuple[float, float] = (0.85, 1.2)
    first_variant_neutral: bool = True
    unknown_keep: float = 0.25
    workers: int = 2


def _check(value, expected, key: str):
    """Coerce/validate one YAML value against a field type; errors name the key."""
    if expected in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if expected in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if expected in ("bool", bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r}: expected true/false, got {value!r}")
        return value
    if expected in ("str", str):
        if not isinstance(value, str):
            raise ValueError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    if expected == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"config key {key!r}: expected a list of words (quote yes/no/on/off), "
                             f"got {value!r}")
        return tuple(v.strip().lower() for v in value)
    if expected == "tuple[float, float]":
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or not 0 < value[0] <= value[1]):
            raise ValueError(f"config key {key!r}: expected [low, high] with 0 < low <= high, "
                             f"got {value!r}")
        return (float(value[0]), float(value[1]))
    raise TypeError(f"no validator for {expected!r} ({key})")


def _build(cls, raw: dict, prefix: str = ""):
    if not isinstance(raw, dict):
        raise ValueError(f"config {prefix or 'file'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}'; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if name == "engines":
            if not isinstance(value, dict):
                raise ValueError(f"config key {key!r}: expected a mapping engine -> settings")
            for engine in value:
                if engine not in tts.ENGINES:
                    raise ValueError(f"unknown engine {engine!r} under 'engines'; known: "
                                     f"{', '.join(tts.ENGINES)}")
            kwargs[name] = {e: _build(EngineConfig, s or {}, f"engines.{e}.")
                            for e, s in value.items()}
        else:
            kwargs[name] = _check(value, fields[name].type, key)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"config is missing key '{prefix}{missing[0]}'")
    return cls(**kwargs)


def load_config(path: str | Path) -> CorpusConfig:
    """Read a corpus YAML into a `CorpusConfig`; unknown keys and wrong types raise ValueError."""
    with open(path, encoding="utf-8") as f:
        config = _build(CorpusConfig, yaml.safe_load(f) or {})
    if not 0.0 <= config.unknown_keep <= 1.0:
        raise ValueError(f"config key 'unknown_keep': expected 0..1, got {config.unknown_keep}")
    overlap = set(config.keywords) & set(config.unknown_words)
    if overlap:
        raise ValueError(f"words in both keywords and unknown_words: {sorted(overlap)}")
    return config


# ---------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Job:
    """One rendering: a voice at one (rate, pitch), speaking `words`."""

    voice: tts.Voice
    variant: int
    rate: float
    pitch: float
    words: tuple[str, ...]


def _rng(*parts) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def plan(config: CorpusConfig, limit_voices: int | None = None) -> tuple[list[Job], list[str]]:
    """All renderings to do, and notes about skipped engines."""
    voices, notes = tts.list_voices(list(config.engines))
    jobs = []
    for engine, engine_cfg in config.engines.items():
        pool = sorted((v for v in voices if v.engine == engine), key=lambda v: v.name)
        _rng(config.seed, engine, "voices").shuffle(pool)
        cap = engine_cfg.max_voices or len(pool)
        if limit_voices is not None:
            cap = min(cap, limit_voices)
        for voice in sorted(pool[:cap], key=lambda v: v.name):
            for k in range(engine_cfg.variants_per_voice):
                rng = _rng(config.seed, engine, voice.name, k)
                rate, pitch = round(rng.uniform(*config.rate_range), 3), round(rng.uniform(*config.pitch_range), 3)
                if k == 0 and config.first_variant_neutral and engine_cfg.variants_per_voice > 1:
                    rate, pitch = 1.0, 1.0
                unknown = [w for w in config.unknown_words if rng.random() < config.unknown_keep]
                jobs.append(Job(voice, k, rate, pitch, config.keywords + tuple(unknown)))
    return jobs, notes


def clip_path(out: Path, word: str, job: Job) -> Path:
    """Where one clip goes: a folder per word (spaces of multi-word phrases become underscores)."""
    return out / word.replace(" ", "_") / f"{job.voice.engine}__{job.voice.name}__v{job.variant}.wav"


def fingerprints(out: Path) -> dict[str, str]:
    """Digests of a built corpus: `corpus` over every file (what seed_trial.py records as corpus_sha256),
    `manifest.csv`, and one per engine over its clips. Two builds that differ can then be told apart by engine:
    the neural voices (Piper, hibari) run on ONNX Runtime, whose kernels follow the CPU's instruction set, so
    their clips can differ between hosts while the rule-based engines' match."""
    files = file_digests(out)  # each file read and hashed once, for all the digests
    by_engine: dict[str, dict[str, str]] = {}
    for name, digest in files.items():
        clip = name.partition("/")[2]
        if clip.endswith(".wav") and "/" not in clip:
            by_engine.setdefault(clip.split("__", 1)[0], {})[name] = digest
    return {"corpus": digest_of(files), "manifest.csv": files.get("manifest.csv", ""),
            **{engine: digest_of(clips) for engine, clips in sorted(by_engine.items())}}


# ---------------------------------------------------------------------------- work


def _row(out: Path, path: Path, word: str, job: Job, rate: float, duration_s: float) -> dict:
    return {"path": path.relative_to(out).as_posix(), "word": word, "engine": job.voice.engine,
            "voice": job.voice.name, "rate": f"{rate:.3f}", "pitch": f"{job.pitch:.3f}",
            "licence": job.voice.licence, "duration_s": f"{duration_s:.3f}"}


def _write(path: Path, audio, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    sf.write(tmp, tts.to_int16(audio), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def run_job(args: tuple[Job, CorpusConfig, Path]) -> tuple[list[dict], Counter]:
    """Render the missing clips of one job. Returns manifest rows (new and existing) and counts."""
    job, config, out = args
    stats: Counter = Counter()
    rows: dict[str, dict] = {}
    todo = []
    for word in job.words:
        path = clip_path(out, word, job)
        if path.exists():
            info = sf.info(path)
            rows[word] = _row(out, path, word, job, job.rate, info.frames / info.samplerate)
            stats["existing"] += 1
        else:
            todo.append(word)
    if todo:
        try:
            clips = tts.synthesize_words(job.voice, todo, config.carrier, config.sample_rate,
                                         job.rate, job.pitch)
        except (tts.TTSError, OSError, RuntimeError) as exc:  # one broken voice must not stop the build
            stats["failed"] += len(todo)
            log.warning("%s/%s v%d: %s", job.voice.engine, job.voice.name, job.variant, exc)
            clips = []
        for word, clip in zip(todo, clips):
            audio, rate = clip.audio, job.rate
            duration = len(audio) / config.sample_rate
            if config.max_duration_s < duration <= config.max_duration_s * config.max_speedup:
                rate = job.rate * duration / config.max_duration_s * 1.05
                audio = tts.synthesize_words(job.voice, [word], config.carrier, config.sample_rate,
                                             rate, job.pitch)[0].audio
                duration = len(audio) / config.sample_rate
                stats["sped_up"] += 1
            if duration > config.max_duration_s:
                stats["dropped_long"] += 1
                continue
            if duration < config.min_duration_s:
                stats["dropped_short"] += 1
                continue
            path = clip_path(out, word, job)
            _write(path, audio, config.sample_rate)
            rows[word] = _row(out, path, word, job, rate, duration)
            stats[f"cut_{clip.method}"] += 1
            stats["written"] += 1
    return [rows[w] for w in job.words if w in rows], stats


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def write_manifest(out: Path, rows: list[dict]) -> Path:
    path = out / "manifest.csv"
    tmp = path.with_name("manifest.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    os.replace(tmp, path)
    return path


def build(config: CorpusConfig, out: Path, limit_voices: int | None = None,
          progress: bool = True) -> tuple[list[dict], Counter]:
    """Build (or finish) the corpus under `out`; returns the manifest rows and counts."""
    from tqdm import tqdm

    jobs, notes = plan(config, limit_voices)
    for note in notes:
        log.info("%s", note)
    out.mkdir(parents=True, exist_ok=True)
    # Interleave engines so slow ones (piper, festival) are spread over the run.
    jobs.sort(key=lambda j: _rng(config.seed, "order", j.voice.engine, j.voice.name, j.variant).random())
    rows: list[dict] = []
    stats: Counter = Counter()
    total = sum(len(j.words) for j in jobs)
    every = max(1, len(jobs) // 20)
    work = [(j, config, out) for j in jobs]
    bar = tqdm(total=total, unit="clip", disable=not progress, smoothing=0.05)
    if config.workers > 1:
        with multiprocessing.get_context("fork").Pool(config.workers, _init_worker) as pool:
            for i, (job_rows, job_stats) in enumerate(pool.imap_unordered(run_job, work), 1):
                rows += job_rows
                stats += job_stats
                bar.update(sum(job_stats[k] for k in ("existing", "written", "failed",
                                                      "dropped_long", "dropped_short")))
                if i % every == 0:
                    write_manifest(out, rows)
    else:
        _init_worker()
        for i, item in enumerate(work, 1):
            job_rows, job_stats = run_job(item)
            rows += job_rows
            stats += job_stats
            bar.update(len(item[0].words))
            if i % every == 0:
                write_manifest(out, rows)
    bar.close()
    write_manifest(out, rows)
    return rows, stats
