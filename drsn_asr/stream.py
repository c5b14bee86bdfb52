"""The streaming recognizer: audio chunks in, `Detection`s out. Files, microphones and servers all use it.

Per chunk: validate → (resample if a different rate was declared) → log-mel frames, each computed once →
a ring buffer of the model's window → one classification every `hop_ms` → posteriors averaged over
`smoothing_ms` → when a keyword's smoothed score reaches its threshold, the detection is emitted at the
score's peak (at most `peak_wait_ms` later, so the word has ended); then that keyword is held off until its
score falls below half the threshold, and every keyword until `refractory_ms` has passed.

Decisions depend only on the samples, never on how they were chunked: feeding a file sample by sample or
all at once gives the same detections.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio import StreamResampler, to_float32
from .checkpoint import LoadedModel, load_model
from .config import LABEL_SILENCE, LABEL_UNKNOWN, DetectorConfig, from_dict
from .features import LogMel, StreamingLogMel

log = logging.getLogger(__name__)

MAX_BATCH_WINDOWS = 256
ACTIVE_RANGE_DB = 15.0  # frames within this of the loudest frame of the window count as the word
MAX_GAP_FRAMES = 8


@dataclass(frozen=True)
class Detection:
    """A recognized command: `start_s`/`end_s` are seconds from the start of the stream."""

    label: str
    score: float
    start_s: float
    end_s: float


def detector_config(**options: Any) -> DetectorConfig:
    """DetectorConfig from keyword options (hop_ms, smoothing_ms, threshold, thresholds, refractory_ms)."""
    return from_dict(DetectorConfig, options)


class Recognizer:
    """Streaming keyword recognizer.

    Args:
        model: a shipped model name, a checkpoint path, a LoadedModel, or None for the default model.
        on_detection: called with each Detection as it happens; exceptions it raises are logged, not raised.
        sample_rate: rate of the audio you will feed; other than the model's rate it is resampled.
        device: "cpu", "cuda" or None (CUDA when available).
        **detector_options: fields of DetectorConfig (hop_ms, smoothing_ms, threshold, thresholds, refractory_ms).

    Not thread-safe: use one Recognizer per stream (they may share one LoadedModel).
    """

    def __init__(
        self,
        model: str | LoadedModel | None = None,
        on_detection: Callable[[Detection], Any] | None = None,
        sample_rate: int = 16000,
        device: str | torch.device | None = None,
        **detector_options: Any,
    ):
        self.model = load_model(model, device=device)
        self.config = detector_config(**detector_options)
        self.on_detection = on_detection
        features = self.model.features
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self.labels = self.model.labels
        unknown = set(self.config.thresholds) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds for unknown labels {sorted(unknown)}; the model's labels are {self.labels}")
        self._frontend = LogMel(features).to(self.model.device)
        self._window_frames = self.model.net.window_frames
        self._hop_frames = max(1, round(self.config.hop_ms / features.hop_ms))
        self._smooth_n = max(1, round(self.config.smoothing_ms / (self._hop_frames * features.hop_ms)))
        self._keyword = torch.tensor([label not in (LABEL_UNKNOWN, LABEL_SILENCE) for label in self.labels])
        self._thresholds = torch.tensor([self.config.thresholds.get(l, self.config.threshold) for l in self.labels])
        self._resampler = StreamResampler(sample_rate, features.sample_rate) if sample_rate != features.sample_rate else None
        self._features = StreamingLogMel(self._frontend)
        self.reset()

    def reset(self) -> None:
        """Forget all state: buffered audio, frames, smoothing, hold-offs and the stream clock."""
        c = self.model.features
        self._features.reset()
        if self._resampler is not None:
            self._resampler.reset()
        self._frames = torch.full((c.n_mels, self._window_frames), self._frontend.silence_value, device=self.model.device)
        self._n_frames = 0
        self._recent: deque[torch.Tensor] = deque(maxlen=self._smooth_n)
        self._armed = torch.ones(len(self.labels), dtype=torch.bool)
        self._last_detection_s = -math.inf
        self._pending: tuple[int, float, float] | None = None  # (label index, peak score, crossing time)
        self.scores: dict[str, float] = {label: 0.0 for label in self.labels}
        self.n_classifications = 0

    @property
    def time_s(self) -> float:
        """Stream time covered by the frames computed so far."""
        c = self.model.features
        return 0.0 if self._n_frames == 0 else ((self._n_frames - 1) * c.hop_samples + c.window_samples) / c.sample_rate

    def feed(self, chunk: np.ndarray | torch.Tensor) -> list[Detection]:
        """Add a chunk of mono audio (any length; int16 or float32 in [-1, 1]); return new detections."""
        samples = to_float32(chunk, what="Recognizer.feed")
        if samples.size and samples.dtype == np.float32 and np.abs(samples).max() > 4.0:
            raise ValueError(
                "Recognizer.feed: float samples far beyond [-1, 1] (max |x| = %.1f) look like integer PCM stored "
                "as float; pass the int16 array itself or divide by 32768" % float(np.abs(samples).max())
            )
        if self._resampler is not None:
            samples = self._resampler.feed(samples)
        return self._consume(samples)

    def flush(self) -> list[Detection]:
        """End of stream: push half a window of silence through so the last word is classified; emit it."""
        samples = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
        c = self.model.features
        tail = np.zeros(round(self.model.net.config.window_s * c.sample_rate / 2), np.float32)
        return self._consume(np.concatenate([samples, tail]))

    def _consume(self, samples: np.ndarray) -> list[Detection]:
        if samples.size == 0:
            return []
        new = self._features.feed(torch.from_numpy(samples))
        if new.shape[1] == 0:
            return []
        history = torch.cat([self._frames, new], dim=1)
        first = self._n_frames
        self._n_frames += new.shape[1]
        self._frames = history[:, -self._window_frames :]
        # classification points: frame counts that are multiples of the hop, among the new frames
        ends = [n for n in range(first + 1, self._n_frames + 1) if n % self._hop_frames == 0]
        detections: list[Detection] = []
        for start in range(0, len(ends), MAX_BATCH_WINDOWS):
            batch_ends = ends[start : start + MAX_BATCH_WINDOWS]
            offsets = [history.shape[1] - (self._n_frames - n) for n in batch_ends]
            windows = torch.stack([history[:, o - self._window_frames : o] for o in offsets])
            with torch.inference_mode():
                probs = torch.softmax(self.model.net(windows), dim=1).float().cpu()
            for n, p, window in zip(batch_ends, probs, windows):
                detection = self._decide(n, p, window)
                if detection is not None:
                    detections.append(detection)
                    self._emit(detection)
        return detections

    def _decide(self, n_frames: int, probs: torch.Tensor, window: torch.Tensor) -> Detection | None:
        self.n_classifications += 1
        self._recent.append(probs)
        smoothed = torch.stack(tuple(self._recent)).mean(dim=0)
        self.scores = dict(zip(self.labels, smoothed.tolist()))
        self._armed |= smoothed < self._thresholds / 2
        c = self.model.features
        now_s = ((n_frames - 1) * c.hop_samples + c.window_samples) / c.sample_rate
        if self._pending is not None:
            label, peak, since_s = self._pending
            score = float(smoothed[label])
            if score > peak and (now_s - since_s) * 1000 < self.config.peak_wait_ms:
                self._pending = (label, score, since_s)
                return None
            self._pending = None
            self._last_detection_s = now_s
            start_s, end_s = self._locate(window, now_s)
            return Detection(self.labels[label], round(peak, 4), start_s, end_s)
        best = int(torch.where(self._keyword, smoothed, torch.zeros_like(smoothed)).argmax())
        if (
            self._keyword[best]
            and smoothed[best] >= self._thresholds[best]
            and smoothed[best] >= smoothed.max()
            and self._armed[best]
            and (now_s - self._last_detection_s) * 1000 >= self.config.refractory_ms
        ):
            self._armed[best] = False
            self._pending = (best, float(smoothed[best]), now_s)
        return None

    def _locate(self, window: torch.Tensor, end_of_window_s: float) -> tuple[float, float]:
        """Where the word is in the window: the run of loud frames around the loudest one."""
        c = self.model.features
        energy_db = 10 / math.log(10) * torch.logsumexp(window, dim=0)
        peak = int(energy_db.argmax())
        active = energy_db >= energy_db[peak] - ACTIVE_RANGE_DB
        lo = hi = peak
        gap = 0
        while lo > 0 and gap <= MAX_GAP_FRAMES:
            lo -= 1
            gap = 0 if active[lo] else gap + 1
        lo += gap
        gap = 0
        while hi < len(active) - 1 and gap <= MAX_GAP_FRAMES:
            hi += 1
            gap = 0 if active[hi] else gap + 1
        hi -= gap
        frame_s = c.hop_samples / c.sample_rate
        window_start_s = end_of_window_s - (len(active) - 1) * frame_s - c.window_samples / c.sample_rate
        start_s = max(0.0, window_start_s + lo * frame_s)
        end_s = window_start_s + hi * frame_s + c.window_samples / c.sample_rate
        return round(start_s, 3), round(max(end_s, start_s), 3)

    def _emit(self, detection: Detection) -> None:
        if self.on_detection is None:
            return
        try:
            self.on_detection(detection)
        except Exception:
            log.exception("on_detection callback raised for %s; the stream goes on", detection)
