"""Training and evaluation data: readers for each source, 1 s example caches, and noisy batches.

Sources (each a reader returning `Example`s with a `group` — the speaker or voice — for honest splits):
- a TTS corpus built by pipelines/build_corpus.py (manifest.csv),
- Free Spoken Digit Dataset recordings (`<digit>_<speaker>_<take>.wav`),
- real command sentences (non-keyword speech, cut into 1 s windows),
- Google Speech Commands (v0.01/v0.02 folder layout with validation_list.txt / testing_list.txt),
- a part of Speech Commands' real speakers in its folder layout, split by speaker (`read_real_commands`),
- any folder in Speech Commands layout (DIR/<word>/<clip>.wav), which is what `evaluate` reads.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..runtime.audio import SAMPLE_RATE, read_audio
from ..runtime.checkpoint import sha256
from ..runtime.config import LABEL_SILENCE, LABEL_UNKNOWN

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BACKGROUND_DIR = "_background_noise_"
REAL_COMMANDS_TEST_PART = (0.8, 1.0)  # speakers of read_real_commands (by id hash) never trained or tuned on


def file_digests(root: str | Path) -> dict[str, str]:
    """The SHA-256 of every file under `root`, by its path relative to `root` (POSIX separators)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256(p) for p in root.rglob("*") if p.is_file()}


def digest_of(digests: dict[str, str]) -> str:
    """One SHA-256 over `file_digests` entries: each relative path and its SHA-256, in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(digests):
        digest.update(f"{name}\0{digests[name]}\n".encode())
    return digest.hexdigest()


def folder_fingerprint(root: str | Path) -> str:
    """SHA-256 over every file under `root`: its relative path and its SHA-256, in sorted order. The same content
    under the same names gives the same digest wherever it lies."""
    return digest_of(file_digests(root))


@dataclass(frozen=True)
class Example:
    """One labelled recording: `word` is what was said, `group` who said it (speaker or TTS voice)."""

    path: str
    word: str
    group: str
    source: str
    offset_s: float = 0.0  # where the 1 s window starts inside a longer recording (sentences)


def label_for(word: str, vocabulary: Iterable[str]) -> str:
    """The class label of a spoken word: the word itself if in the vocabulary, else `_unknown_`."""
    if word == LABEL_SILENCE:
        return LABEL_SILENCE
    return word if word in set(vocabulary) else LABEL_UNKNOWN


def examples_sha256(examples: dict[str, list[Example]]) -> str:
    """SHA-256 of what a recipe trains and validates on: each example's split, word, speaker or voice, source,
    offset and file content, but not where the files lie, so two checkouts of the same data agree."""
    digest, files = hashlib.sha256(), {}
    for split in sorted(examples):
        for ex in examples[split]:
            if ex.path not in files:  # a sentence recording serves many windows: hash it once
                files[ex.path] = sha256(ex.path)
            digest.update(f"{split}\0{ex.word}\0{ex.group}\0{ex.source}\0{ex.offset_s}\0{files[ex.path]}\n".encode())
    return digest.hexdigest()


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` — for splits that never change between runs or machines."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


def read_tts_corpus(root: str | Path) -> list[Example]:
    """Examples from a TTS corpus manifest (path relative to `root`, word, engine, voice, ...); group = engine/voice."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: build the corpus with pipelines/build_corpus.py first")
    with manifest.open() as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        path = Path(row["path"])
        path = path if path.is_absolute() else root / path
        out.append(Example(str(path), row["word"], f"{row['engine']}/{row['voice']}", "tts"))
    return out


def read_fsdd(root: str | Path, speakers: Iterable[str] | None = None) -> list[Example]:
    """Free Spoken Digit Dataset: `<digit>_<speaker>_<take>.wav`; keep only `speakers` when given."""
    root = Path(root)
    keep = set(speakers) if speakers is not None else None
    out = []
    for path in sorted(root.glob("*.wav")):
        digit, speaker, _ = path.stem.split("_")
        if keep is None or speaker in keep:
            out.append(Example(str(path), DIGIT_WORDS[int(digit)], speaker, "fsdd"))
    return out


def sentence_labels(root: str | Path) -> dict[str, str]:
    """Recording stem → the words its `label.json` knows it contains (intent slot values, lower case).

    The command-sentences recordings come with intent/slot labels, not full transcripts: the slot values
    ("iced coffee", "double shot") are the content words. `label.json` sits in `root` or its parent.
    """
    root = Path(root)
    for candidate in (root / "label.json", root.parent / "label.json"):
        if candidate.is_file():
            labels = json.loads(candidate.read_text())
            return {Path(name).stem: " ".join(" ".join(str(v).lower().split()) for v in entry.get("slots", {}).values())
                    for name, entry in labels.items()}
    raise FileNotFoundError(f"no label.json in {root} or {root.parent}: cannot tell which sentences contain a word")


def read_sentences(root: str | Path, window_s: float = 1.0, hop_s: float = 0.5, part: tuple[float, float] = (0, 1),
                   exclude_words: Iterable[str] = ()) -> list[Example]:
    """Real non-keyword speech: each sentence cut into windows (`offset_s`), as `_unknown_` examples.

    `part` selects recordings by a stable hash of their name, so train and test never share a recording.
    Recordings whose labels mention any of `exclude_words` are left out (they may contain a keyword).
    """
    import soundfile as sf

    exclude = {w.lower() for w in exclude_words}
    labels = sentence_labels(root) if exclude else {}
    out = []
    for path in sorted(Path(root).glob("*.flac")):
        if not part[0] <= stable_fraction(path.name) < part[1]:
            continue
        if exclude and exclude & set(labels.get(path.stem, "").split()):
            continue
        duration_s = sf.info(str(path)).duration
        n = max(1, int((duration_s - window_s) / hop_s) + 1)
        out.extend(Example(str(path), LABEL_UNKNOWN, path.stem, "sentences", i * hop_s) for i in range(n))
    return out


def read_labelled_dir(root: str | Path) -> list[Example]:
    """Any folder in Speech Commands layout: root/<word>/<clip>.(wav|flac|ogg); `_background_noise_` skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (expected DIR/<word>/<clip>.wav)")
    out = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != BACKGROUND_DIR):
        for path in sorted(word_dir.iterdir()):
            if path.suffix.lower() in AUDIO_SUFFIXES:
                out.append(Example(str(path), word_dir.name, path.stem.split("_nohash_")[0], root.name))
    if not out:
        raise ValueError(f"{root}: no audio clips found in {root}/<word>/ folders")
    return out


def read_speech_commands(root: str | Path, split: str) -> list[Example]:
    """Google Speech Commands v0.01/v0.02 by its own split lists; split is 'train', 'validation' or 'test'."""
    root = Path(root)
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, got {split!r}")
    lists = {}
    for name in ("validation", "testing"):
        file = root / f"{name}_list.txt"
        if not file.is_file():
            raise FileNotFoundError(f"{file} missing: is {root} a Speech Commands folder?")
        lists[name] = {line.strip() for line in file.read_text().splitlines() if line.strip()}
    examples = read_labelled_dir(root)
    out = []
    for ex in examples:
        rel = Path(ex.path).relative_to(root).as_posix()
        which = "validation" if rel in lists["validation"] else "test" if rel in lists["testing"] else "train"
        if which == split:
            out.append(Example(ex.path, ex.word, ex.group, "speech_commands"))
    return out


def read_real_commands(root: str | Path, part: tuple[float, float]) -> list[Example]:
    """Real speakers saying the words, in Speech Commands layout (`<word>/<speaker>_nohash_<n>.flac`), split by
    speaker: a speaker whose id hashes into `part` brings all their clips, so no speaker is in two splits.
    `_silence_` clips (no speaker) are split by file name the same way."""
    out = []
    for ex in read_labelled_dir(root):
        if part[0] <= stable_fraction(ex.group) < part[1]:
            out.append(Example(ex.path, ex.word, ex.group, "real_commands"))
    return out


def speech_commands_noise(root: str | Path) -> list[Path]:
    """The `_background_noise_` recordings of a Speech Commands folder."""
    return sorted((Path(root) / BACKGROUND_DIR).glob("*.wav"))


def fit_window(audio: np.ndarray, n_samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """Place a clip in a window of `n_samples`: pad around a short clip at a random (or centred) offset,
    crop a long one around its loudest part."""
    if len(audio) >= n_samples:
        frame = 160
        energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(frame), mode="valid")
        centre = int(np.argmax(energy)) + frame // 2 if len(energy) else len(audio) // 2
        start = int(np.clip(centre - n_samples // 2, 0, len(audio) - n_samples))
        return audio[start : start + n_samples]
    room = n_samples - len(audio)
    left = int(rng.integers(0, room + 1)) if rng is not None else room // 2
    return np.pad(audio, (left, room - left))


def load_example(ex: Example, window_s: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """The example's audio as one window of float32 at 16 kHz."""
    n = round(window_s * SAMPLE_RATE)
    audio = read_audio(ex.path)
    if ex.offset_s:
        start = round(ex.offset_s * SAMPLE_RATE)
        return fit_window(audio[start : start + n], n, None)
    return fit_window(audio, n, rng)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean(dim=1).sqrt().clamp_min(1e-8)


class NoisyBatches:
    """Mix noise into clean 1 s examples at random SNRs, on the fly, batched in torch.

    SNR is defined on the active speech: `speech_rms` holds each clip's active-speech RMS (see
    augment.active_rms), so leading and trailing silence do not dilute it. Silence examples (zero speech)
    get noise at a random absolute level. Then the whole mix gets a random gain (`gain_range_db`), clipped to
    full scale: real input levels vary by tens of dB, and a log-mel model that never heard quiet speech fails on it.
    With `p_second_noise`, a share of examples gets a second, independent noise segment added to the first, at
    `second_noise_db` relative to it, before the SNR is set: a street rarely has one source at a time.
    """

    def __init__(
        self,
        speech: torch.Tensor,
        speech_rms: torch.Tensor,
        noise: torch.Tensor,
        snr_range_db: tuple[float, float],
        p_clean: float,
        silence_level_range_db: tuple[float, float] = (-50.0, -10.0),
        gain_range_db: tuple[float, float] = (0.0, 0.0),
        p_second_noise: float = 0.0,
        second_noise_db: tuple[float, float] = (-10.0, 0.0),
    ):
        self.speech, self.speech_rms, self.noise = speech, speech_rms, noise
        self.snr_range_db, self.p_clean = snr_range_db, p_clean
        self.silence_level_range_db = silence_level_range_db
        self.gain_range_db = gain_range_db
        self.p_second_noise, self.second_noise_db = p_second_noise, second_noise_db

    def _segments(self, b: int, n: int, generator: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(self.noise) - n, (b,), generator=generator)
        return self.noise[starts[:, None] + torch.arange(n)[None, :]].float()

    def mix(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noisy float32 audio (B, n_samples) for the examples at `index`."""
        speech = self.speech[index].float() / 32768.0
        b, n = speech.shape
        noise = self._segments(b, n, generator)
        if self.p_second_noise > 0:  # drawn only when asked, so recipes without it keep their random stream
            second = self._segments(b, n, generator)
            lo, hi = self.second_noise_db
            level_db = lo + (hi - lo) * torch.rand(b, generator=generator)
            scale = _rms(noise) / _rms(second) * 10 ** (level_db / 20)
            use = torch.rand(b, generator=generator) < self.p_second_noise
            noise = noise + second * (scale * use)[:, None]
        noise_rms = _rms(noise)
        lo, hi = self.snr_range_db
        snr_db = lo + (hi - lo) * torch.rand(b, generator=generator)
        rms = self.speech_rms[index].float()
        target = rms / (10 ** (snr_db / 20))
        silent = rms <= 0
        lo, hi = self.silence_level_range_db
        target[silent] = 10 ** ((lo + (hi - lo) * torch.rand(int(silent.sum()), generator=generator)) / 20)
        clean = (torch.rand(b, generator=generator) < self.p_clean) & ~silent
        target[clean] = 0.0
        mix = speech + noise * (target / noise_rms)[:, None]
        lo, hi = self.gain_range_db
        gain = 10 ** ((lo + (hi - lo) * torch.rand(b, generator=generator)) / 20)
        return (mix * gain[:, None]).clamp(-1.0, 1.0)  # a real input level: near and far talkers, loud and quiet mics
