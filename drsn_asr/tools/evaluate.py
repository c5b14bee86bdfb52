"""Evaluation on a folder in Speech Commands layout (DIR/<word>/<clip>.wav), clean and with noise mixed in.

Scoring rule for a clip, the same decision the streaming Recognizer makes:
- a clip shorter than the model's window is centred in one window (silence around it);
- a longer clip is covered by windows every `hop_ms` (the first at its start, the last at its end) and the
  posteriors are averaged over `smoothing_ms`, as in the stream;
- the clip is the keyword with the highest smoothed score if that score reaches the detector threshold
  (a detection); otherwise it is `_unknown_` or `_silence_`, whichever has the higher mean score.
Beside it each clip gets a threshold-free `top1` label, so the classifier can be told apart from the detector's
operating point: that keyword if, where it peaks, it outscores both `_unknown_` and `_silence_`, otherwise the
rule's `_unknown_`/`_silence_` choice. For a clip that fits one window this is the plain argmax of the
posteriors, the accuracy that Speech Commands papers report (`top1_accuracy`, `top1_keyword_accuracy`,
`top1_unknown_rejection`).
A clip whose folder is not in the model's vocabulary is expected to be `_unknown_`; `_silence_` holds noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..runtime.audio import SAMPLE_RATE, read_audio
from ..training.augment import active_rms, mix_at_snr
from ..runtime.checkpoint import LoadedModel, load_model
from ..runtime.config import LABEL_SILENCE, LABEL_UNKNOWN, DetectorConfig
from ..training.data import AUDIO_SUFFIXES, Example, read_labelled_dir
from ..runtime.decision import hop_frames, smoothing_classifications
from ..runtime.inference import inference_forward
from ..runtime.stream import detector_config


SILENT_CLIP_NOISE_RMS = 0.01


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    predicted: str
    score: float
    top1: str


class ClipResult(NamedTuple):
    predicted: str  # the streaming rule's label
    score: float  # its score
    top1: str  # the threshold-free label (module docstring)


def expected_label(word: str, labels: list[str]) -> str:
    """What a clip of `word` should be recognized as by a model with `labels`."""
    if word == LABEL_SILENCE:
        return LABEL_SILENCE
    if word not in labels and word.replace("_", " ") in labels:  # folder "lights_on" holds the phrase "lights on"
        word = word.replace("_", " ")
    return word if word in labels and word != LABEL_UNKNOWN else LABEL_UNKNOWN


def clip_windows(audio: np.ndarray, window_samples: int, hop_samples: int) -> np.ndarray:
    """The windows a clip is scored on (see the module docstring), shape (n_windows, window_samples)."""
    if len(audio) <= window_samples:
        room = window_samples - len(audio)
        return np.pad(audio, (room // 2, room - room // 2))[None, :]
    starts = list(range(0, len(audio) - window_samples + 1, hop_samples))
    if starts[-1] != len(audio) - window_samples:
        starts.append(len(audio) - window_samples)
    return np.stack([audio[s : s + window_samples] for s in starts])


@torch.inference_mode()
def classify_clip(model: LoadedModel, frontend: nn.Module, audio: np.ndarray, detector: DetectorConfig) -> ClipResult:
    """The streaming rule's (label, score) of one clip and its threshold-free top-1 label (module docstring)."""
    window_samples = round(model.net.config.window_s * SAMPLE_RATE)
    hop_samples = hop_frames(detector, model.features.hop_ms) * model.features.hop_samples
    windows = torch.from_numpy(clip_windows(audio, window_samples, hop_samples)).to(model.device)
    probs = torch.softmax(inference_forward(model.net)(frontend(windows)), dim=1).float().cpu()  # the stream's forward
    n_smooth = min(len(probs), smoothing_classifications(detector))
    smoothed = probs.unfold(0, n_smooth, 1).mean(dim=2)  # (n_positions, n_classes)
    labels = model.labels
    keyword = [i for i, l in enumerate(labels) if l not in (LABEL_UNKNOWN, LABEL_SILENCE)]
    rest_ids = [labels.index(LABEL_UNKNOWN), labels.index(LABEL_SILENCE)]
    peak, where = smoothed[:, keyword].max(dim=0)
    best = int(peak.argmax())
    k = keyword[best]
    mean = smoothed.mean(dim=0)
    rest = max((LABEL_UNKNOWN, LABEL_SILENCE), key=lambda l: float(mean[labels.index(l)]))
    top1 = labels[k] if peak[best] >= smoothed[int(where[best]), rest_ids].max() else rest
    if peak[best] >= detector.thresholds.get(labels[k], detector.threshold):
        return ClipResult(labels[k], float(peak[best]), top1)
    return ClipResult(rest, float(mean[labels.index(rest)]), top1)


def _share(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def summarize(predictions: list[Prediction], labels: list[str]) -> dict[str, Any]:
    """accuracy, keyword_accuracy, unknown_rejection, n_clips, per_class recall, confusion, predictions, and the
    threshold-free top1_accuracy, top1_keyword_accuracy and top1_unknown_rejection."""
    n = len(predictions)
    keyword = [p for p in predictions if p.label not in (LABEL_UNKNOWN, LABEL_SILENCE)]
    unknown = [p for p in predictions if p.label == LABEL_UNKNOWN]
    confusion: dict[str, dict[str, int]] = {}
    for p in predictions:
        row = confusion.setdefault(p.label, {})
        row[p.predicted] = row.get(p.predicted, 0) + 1
    per_class = {l: row.get(l, 0) / sum(row.values()) for l, row in sorted(confusion.items())}
    return {
        "accuracy": _share([p.label == p.predicted for p in predictions]) or 0.0,
        "keyword_accuracy": _share([p.label == p.predicted for p in keyword]),
        "unknown_rejection": _share([p.predicted in (LABEL_UNKNOWN, LABEL_SILENCE) for p in unknown]),
        "top1_accuracy": _share([p.label == p.top1 for p in predictions]) or 0.0,
        "top1_keyword_accuracy": _share([p.label == p.top1 for p in keyword]),
        "top1_unknown_rejection": _share([p.top1 in (LABEL_UNKNOWN, LABEL_SILENCE) for p in unknown]),
        "n_clips": n,
        "per_class": per_class,
        "confusion": confusion,
        "predictions": [p.__dict__ for p in predictions],
    }


def _per_noise(predictions: list[Prediction], names: list[str]) -> dict[str, float]:
    """Keyword accuracy of the keyword clips, grouped by the noise recording each was mixed with."""
    hits: dict[str, list[bool]] = {}
    for p, name in zip(predictions, names):
        if p.label not in (LABEL_UNKNOWN, LABEL_SILENCE):
            hits.setdefault(name, []).append(p.label == p.predicted)
    return {name: sum(h) / len(h) for name, h in sorted(hits.items())}


def noise_files(noise_dir: str | Path) -> list[Path]:
    """Every audio file under `noise_dir`, sorted (so a seed picks the same noise on every machine)."""
    files = sorted(p for p in Path(noise_dir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"{noise_dir}: no .wav/.flac/.ogg noise files found")
    return files


def _noise_segment(source: np.ndarray, n: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """`n` samples of `source` from a random start. A stretch of digital silence (the gaps between a synthesized
    scene's events) is drawn again: mixed in, it would leave the clip clean whatever the SNR."""
    for _ in range(100):
        start = int(rng.integers(0, max(1, len(source) - n)))
        segment = np.resize(source[start:], n)
        if segment.any():
            return segment
    raise ValueError(f"noise file {name}: 100 random {n}-sample stretches were all digital silence; "
                     "give --noise-dir recordings with sound in them")


def evaluate(
    data_dir: str | Path,
    model: str | LoadedModel | None = None,
    noise_dir: str | Path | None = None,
    snrs_db: list[float] | None = None,
    seed: int = 0,
    device: str | None = None,
    detector: DetectorConfig | dict[str, Any] | None = None,
    progress=None,
) -> dict[str, Any]:
    """Evaluate a model on DIR; with `noise_dir` and `snrs_db`, also once per SNR with noise mixed in.

    `detector`: the decision settings (threshold, smoothing, hop) — None for those the model carries, as a
    Recognizer would use them; a dict overrides some of them; a DetectorConfig replaces them all.

    Returns the clean result (keys of `summarize`) plus `by_snr` {snr: result} when noise is given; each of
    those also has `per_noise` {noise file stem: keyword accuracy of the keyword clips mixed with it}.
    """
    loaded = load_model(model, device=device)
    if not isinstance(detector, DetectorConfig):
        detector = detector_config(loaded, **(detector or {}))
    hop_frames(detector, loaded.features.hop_ms)  # a hop the stream cannot make is refused before any clip is read
    frontend = loaded.frontend().to(loaded.device)
    examples: list[Example] = read_labelled_dir(data_dir)
    noise_paths = noise_files(noise_dir) if noise_dir else []
    noises, noise_names = [read_audio(p) for p in noise_paths], [p.stem for p in noise_paths]
    conditions: list[float | None] = [None] + (list(snrs_db or []) if noises else [])
    results: dict[Any, list[Prediction]] = {c: [] for c in conditions}
    mixed_with: dict[Any, list[str]] = {c: [] for c in conditions}  # noise file stem of each prediction
    for i, ex in enumerate(examples):
        audio = read_audio(ex.path)
        expected = expected_label(ex.word, loaded.labels)
        for snr in conditions:
            x = audio
            if snr is not None:
                rng = np.random.default_rng([seed, i, int(snr * 10) + 1000])
                which = int(rng.integers(len(noises)))
                source = noises[which]
                mixed_with[snr].append(noise_names[which])
                segment = _noise_segment(source, len(audio), rng, noise_names[which])
                if active_rms(audio, SAMPLE_RATE) > 0:
                    x = mix_at_snr(audio, segment, snr, SAMPLE_RATE)
                else:  # digital silence has no SNR: add the noise at a quiet fixed level
                    x = audio + segment * (SILENT_CLIP_NOISE_RMS / max(float(np.sqrt(np.mean(segment**2))), 1e-8))
            clip = classify_clip(loaded, frontend, x, detector)
            results[snr].append(Prediction(ex.path, expected, clip.predicted, round(clip.score, 4), clip.top1))
        if progress is not None:
            progress(i + 1, len(examples))
    out = summarize(results[None], loaded.labels)
    out["model"] = loaded.source
    out["threshold"], out["hop_ms"] = detector.threshold, detector.hop_ms
    if len(conditions) > 1:
        out["by_snr"] = {str(snr): summarize(results[snr], loaded.labels) for snr in conditions[1:]}
        for snr in conditions[1:]:
            out["by_snr"][str(snr)]["per_noise"] = _per_noise(results[snr], mixed_with[snr])
    return out
