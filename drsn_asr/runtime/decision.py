"""The detection rule, vectorized over streams: smoothed posteriors in, emitted detections out.

For each stream, per classification: the posteriors are averaged over the last `smoothing_ms` of
classifications; when a keyword leads, reaches its threshold, is armed and `refractory_ms` has passed since the
stream's last detection, a detection becomes pending; it follows the keyword's score up to its peak for at most
`peak_wait_ms` (so the word has ended) and is then emitted with that peak score, unless the classifications
`before_span_ms` before it were, on average, non-command speech (`_unknown_` posterior above `unknown_before_max`):
a word that comes out of a sentence is no command. A keyword re-arms once its score falls below half its
threshold. `_unknown_` and `_silence_` never fire.

The state of every stream is one row of a few arrays, so one call advances any number of streams with a
handful of numpy operations, and a stream's decisions never depend on which other streams share the call:
a single Recognizer and a MultiStreamRecognizer make the same ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import LABEL_SILENCE, LABEL_UNKNOWN, DetectorConfig

# Stream times are float seconds, so the gap between two classifications 200 ms apart is 199.99999999 or
# 200.00000001 ms depending on where in the stream they fall; waits compared at this tolerance make the same
# decisions at any stream position (it is far below one sample, 0.0625 ms at 16 kHz).
TIME_TOLERANCE_MS = 1e-3


def hop_frames(config: DetectorConfig, frame_hop_ms: float) -> int:
    """Feature frames per classification hop, or a ValueError when `config.hop_ms` is not a whole number (>= 1)
    of the model's `frame_hop_ms` frames (a stream can only classify at frame boundaries)."""
    n = config.hop_ms / frame_hop_ms
    if n < 1 - 1e-9 or abs(n - round(n)) > 1e-6:
        nearest = max(1, round(n)) * frame_hop_ms
        raise ValueError(f"hop_ms={config.hop_ms:g} is not a whole number of the model's {frame_hop_ms:g} ms feature "
                         f"frames: pass a multiple of {frame_hop_ms:g} ms, e.g. hop_ms={nearest:g}")
    return round(n)


def default_hop_ms(frame_hop_ms: float) -> float:
    """The hop a model gets when neither it nor the caller names one: DetectorConfig's, or the nearest whole number
    of the model's frames when its frames are longer (80 ms speech-embedding frames make it 80 ms)."""
    n = DetectorConfig.hop_ms / frame_hop_ms
    return DetectorConfig.hop_ms if abs(n - round(n)) < 1e-6 and n >= 1 else max(1, round(n)) * frame_hop_ms


def smoothing_classifications(config: DetectorConfig) -> int:
    """How many of the latest classifications the posteriors are averaged over: `smoothing_ms` in hops."""
    return max(1, round(config.smoothing_ms / config.hop_ms))


class DecisionRule:
    """The detection rule of the module docstring for `capacity` streams at once (one row of state each).

    `step(slots, now_s, probs)` takes one classification for each stream in `slots` (each at most once), made at
    stream times `now_s`, and returns the rows whose pending detection is now emitted, with label and peak score.
    A step of one stream (each hop of a `Recognizer`) runs on scalars and row views instead of one-row gathers: the
    same float32 operations in the same order, so the same decisions, at a third of the rule's time.
    """

    def __init__(self, labels: list[str], config: DetectorConfig, capacity: int):
        self.config = config
        self.smooth_n = smooth_n = smoothing_classifications(config)
        self.keyword = np.array([label not in (LABEL_UNKNOWN, LABEL_SILENCE) for label in labels])
        self.thresholds = np.array([config.thresholds.get(l, config.threshold) for l in labels], np.float32)
        self.half_thresholds = self.thresholds / 2  # a keyword re-arms when its score falls below this
        self._keyword_thresholds = np.where(self.keyword, self.thresholds, np.inf).astype(np.float32)  # others never fire
        self._none, self._no_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        n = len(labels)
        self.recent = np.zeros((0, smooth_n, n), np.float32)  # ring of the last smooth_n posteriors
        # the ring's rows oldest first, for each value of count % smooth_n
        self._ring_orders = (np.arange(smooth_n)[:, None] + np.arange(smooth_n)) % smooth_n
        self.scores = np.zeros((0, n), np.float32)  # last smoothed posteriors
        self.n_classifications = np.zeros(0, np.int64)
        self.armed = np.ones((0, n), bool)
        self.last_detection_s = np.zeros(0)
        self.pending_label = np.zeros(0, np.int64)  # -1: no detection pending
        self.pending_peak = np.zeros(0, np.float32)
        self.pending_since_s = np.zeros(0)
        self.slot_thresholds: np.ndarray | None = None  # (capacity, n_labels) once any stream has its own
        # the context check: the last `before` classifications' _unknown_ posteriors, a ring per stream
        self.context = config.unknown_before_max < 1.0 and LABEL_UNKNOWN in labels
        self.unknown_index = labels.index(LABEL_UNKNOWN) if LABEL_UNKNOWN in labels else -1
        near, far = (max(0, round(ms / config.hop_ms)) for ms in config.before_span_ms)
        self.before = np.arange(min(near, far), max(near, far) + 1)  # classifications back from the emitting one
        self.unknown_ring = np.zeros((0, int(self.before[-1]) + 1 if self.context else 0), np.float32)
        self.grow(capacity)

    def set_thresholds(self, slots: np.ndarray, thresholds: dict[int, float] | None) -> None:
        """Give `slots` their own thresholds, {label index: threshold} over the rule's (None: the rule's own)."""
        if self.slot_thresholds is None:
            if not thresholds:
                return
            self.slot_thresholds = np.tile(self.thresholds, (len(self.scores), 1))
        row = self.thresholds.copy()
        for label, value in (thresholds or {}).items():
            row[label] = value
        self.slot_thresholds[slots] = row

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` streams; the new rows start reset."""
        old = len(self.scores)
        if capacity <= old:
            return
        for name in ("recent", "scores", "n_classifications", "armed", "last_detection_s", "pending_label",
                     "pending_peak", "pending_since_s", "unknown_ring"):
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros((capacity - old, *a.shape[1:]), a.dtype)]))
        if self.slot_thresholds is not None:
            self.slot_thresholds = np.concatenate([self.slot_thresholds,
                                                   np.tile(self.thresholds, (capacity - old, 1))])
        self.reset(np.arange(old, capacity))

    def reset(self, slots: np.ndarray) -> None:
        """Forget the streams' smoothing, hold-offs, pending detection and classification count."""
        self.recent[slots] = 0
        self.unknown_ring[slots] = 0
        self.scores[slots] = 0
        self.n_classifications[slots] = 0
        self.armed[slots] = True
        self.last_detection_s[slots] = -math.inf
        self.pending_label[slots] = -1

    def step(self, slots: np.ndarray, now_s: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One classification per stream → (rows emitting a detection, their label indices, peak scores)."""
        if len(slots) == 1:  # a single stream, as every hop of a Recognizer: in scalars, a third of the time
            found = self._step_one(int(slots[0]), float(now_s[0]), probs[0])
            if found is None:
                return self._none, self._none, self._no_scores
            return np.zeros(1, np.int64), np.array([found[0]]), np.array([found[1]], np.float32)
        return self._step_rows(slots, now_s, probs)

    def _step_rows(self, slots: np.ndarray, now_s: np.ndarray, probs: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        count = self.n_classifications[slots]
        self.recent[slots, count % self.smooth_n] = probs
        if self.context:
            self.unknown_ring[slots, count % self.unknown_ring.shape[1]] = probs[:, self.unknown_index]
        count += 1
        self.n_classifications[slots] = count
        # oldest first: a stream's sum depends neither on the other streams nor on where the ring starts (numpy
        # sums a middle axis one row after another, in float32: the order of a loop, in one gather and one sum)
        total = self.recent[slots[:, None], self._ring_orders[count % self.smooth_n]].sum(axis=1)
        smoothed = total / np.minimum(count, self.smooth_n).astype(np.float32)[:, None]
        self.scores[slots] = smoothed
        own = None if self.slot_thresholds is None else self.slot_thresholds[slots]  # (rows, labels)
        self.armed[slots] |= smoothed < (self.half_thresholds if own is None else own / 2)
        waiting = self.pending_label[slots] >= 0
        emitted = (self._none, self._none, self._no_scores)

        # a pending detection follows its score up to the peak, for at most peak_wait_ms, then is emitted
        if waiting.any():
            rows = waiting.nonzero()[0]
            s = slots[rows]
            label = self.pending_label[s]
            score = smoothed[rows, label]
            waited_ms = (now_s[rows] - self.pending_since_s[s]) * 1000
            rising = (score > self.pending_peak[s]) & (waited_ms < self.config.peak_wait_ms - TIME_TOLERANCE_MS)
            self.pending_peak[s[rising]] = score[rising]
            emit, s, label = rows[~rising], s[~rising], label[~rising]
            self.pending_label[s] = -1
            if self.context and len(emit):
                alone = self._alone(s)
                emit, s, label = emit[alone], s[alone], label[alone]
            emitted = (emit, label, self.pending_peak[s])
            self.last_detection_s[s] = now_s[emit]
            if waiting.all():
                return emitted

        # otherwise a keyword that leads, reaches its threshold, is armed and is past the refractory time starts one
        keyword_thresholds = self._keyword_thresholds if own is None else np.where(self.keyword, own, np.inf)
        if not (smoothed >= keyword_thresholds).any():  # no keyword at its threshold, so not the leading one
            return emitted
        rows = (~waiting).nonzero()[0]
        score = smoothed[rows]
        best = np.where(self.keyword, score, 0).argmax(axis=1)
        top = score[np.arange(len(rows)), best]
        crossing = top >= (self.thresholds[best] if own is None else own[rows, best])
        if not crossing.any():
            return emitted
        s = slots[rows]
        crossing &= (
            self.keyword[best]
            & (top >= score.max(axis=1))
            & self.armed[s, best]
            & ((now_s[rows] - self.last_detection_s[s]) * 1000 >= self.config.refractory_ms - TIME_TOLERANCE_MS)
        )
        s, best = s[crossing], best[crossing]
        self.armed[s, best] = False
        self.pending_label[s] = best
        self.pending_peak[s] = top[crossing]
        self.pending_since_s[s] = now_s[rows[crossing]]
        return emitted

    def _step_one(self, slot: int, now_s: float, probs: np.ndarray) -> tuple[int, np.float32] | None:
        """`_step_rows` for one stream, in the same float32 operations in the same order (its decisions and state are
        the same, bit for bit: tested) → (label index, peak score) of an emitted detection, or None."""
        K = self.smooth_n
        count = int(self.n_classifications[slot])
        ring = self.recent[slot]
        ring[count % K] = probs
        if self.context:
            self.unknown_ring[slot, count % self.unknown_ring.shape[1]] = probs[self.unknown_index]
        count += 1
        self.n_classifications[slot] = count
        smoothed = ring[self._ring_orders[count % K]].sum(axis=0) / np.float32(min(count, K))
        self.scores[slot] = smoothed
        own = None if self.slot_thresholds is None else self.slot_thresholds[slot]
        armed = self.armed[slot]
        armed |= smoothed < (self.half_thresholds if own is None else own / 2)
        label = int(self.pending_label[slot])
        if label >= 0:
            score = smoothed[label]
            if (score > self.pending_peak[slot]
                    and (now_s - self.pending_since_s[slot]) * 1000 < self.config.peak_wait_ms - TIME_TOLERANCE_MS):
                self.pending_peak[slot] = score
                return None
            self.pending_label[slot] = -1
            if self.context and not self._alone(np.array([slot]))[0]:
                return None
            self.last_detection_s[slot] = now_s
            return label, self.pending_peak[slot]
        keyword_thresholds = self._keyword_thresholds if own is None else np.where(self.keyword, own, np.inf)
        if not (smoothed >= keyword_thresholds).any():
            return None
        best = int(np.where(self.keyword, smoothed, 0).argmax())
        top = smoothed[best]
        if (top >= (self.thresholds[best] if own is None else own[best]) and self.keyword[best]
                and top >= smoothed.max() and armed[best]
                and (now_s - self.last_detection_s[slot]) * 1000 >= self.config.refractory_ms - TIME_TOLERANCE_MS):
            armed[best] = False
            self.pending_label[slot] = best
            self.pending_peak[slot] = top
            self.pending_since_s[slot] = now_s
        return None

    def _alone(self, slots: np.ndarray) -> np.ndarray:
        """Which of `slots`' emitting detections were not preceded by non-command speech (the context check)."""
        back = self.n_classifications[slots, None] - 1 - self.before  # classification indices before_span_ms back
        made = back >= 0  # (before the stream's first classification: nothing, as silence)
        unknown = self.unknown_ring[slots[:, None], back % self.unknown_ring.shape[1]] * made
        total = unknown[:, 0].copy()
        for j in range(1, unknown.shape[1]):  # summed in order, in float32, as DeviceDecisionRule does
            total += unknown[:, j]
        return total / np.maximum(made.sum(axis=1), 1).astype(np.float32) <= self.config.unknown_before_max


class DeviceDecisionRule:
    """DecisionRule with its state as torch tensors on `device` (a GPU's), for banks whose posteriors are there.

    `step` takes the posteriors where they are and makes no host round trip: it returns, for every stepped row,
    whether it emits, its label and its peak, as device tensors, so a caller can step several rounds and copy
    their outcomes to the host once. Every row is computed alike, without data-dependent branches (the fixed
    shapes a CUDA graph needs). Its decisions are DecisionRule's, bit for bit (the same float32 operations in
    the same order; tested on the CPU, where it also runs).
    """

    def __init__(self, labels: list[str], config: DetectorConfig, capacity: int, device: torch.device | str):
        host = DecisionRule(labels, config, 0)  # the constants, derived once
        self.config, self.smooth_n, self.context, self.unknown_index = host.config, host.smooth_n, host.context, host.unknown_index
        self.device = device = torch.device(device)
        self.keyword = torch.as_tensor(host.keyword, device=device)
        self.thresholds = torch.as_tensor(host.thresholds, device=device)
        self.before = torch.as_tensor(host.before, device=device)
        self._ring = host.unknown_ring.shape[1]
        self._labels = torch.arange(len(labels), device=device)
        n, K, f32, f64 = len(labels), self.smooth_n, torch.float32, torch.float64
        self.recent = torch.zeros(0, K, n, dtype=f32, device=device)
        self.scores = torch.zeros(0, n, dtype=f32, device=device)
        self.n_classifications = torch.zeros(0, dtype=torch.int64, device=device)
        self.armed = torch.ones(0, n, dtype=torch.bool, device=device)
        self.last_detection_s = torch.zeros(0, dtype=f64, device=device)
        self.pending_label = torch.zeros(0, dtype=torch.int64, device=device)
        self.pending_peak = torch.zeros(0, dtype=f32, device=device)
        self.pending_since_s = torch.zeros(0, dtype=f64, device=device)
        self.slot_thresholds = torch.zeros(0, n, dtype=f32, device=device)  # every slot's, own or the rule's
        self.unknown_ring = torch.zeros(0, self._ring, dtype=f32, device=device)
        self.grow(capacity)

    def _index(self, slots: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(slots, dtype=torch.int64).to(self.device)

    def set_thresholds(self, slots: np.ndarray, thresholds: dict[int, float] | None) -> None:
        """Give `slots` their own thresholds, {label index: threshold} over the rule's (None: the rule's own)."""
        row = self.thresholds.clone()
        for label, value in (thresholds or {}).items():
            row[label] = value
        self.slot_thresholds[self._index(slots)] = row

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` streams; the new rows start reset."""
        old = len(self.scores)
        if capacity <= old:
            return
        for name in ("recent", "scores", "n_classifications", "armed", "last_detection_s", "pending_label",
                     "pending_peak", "pending_since_s", "slot_thresholds", "unknown_ring"):
            a = getattr(self, name)
            setattr(self, name, torch.cat([a, a.new_zeros(capacity - old, *a.shape[1:])]))
        self.slot_thresholds[old:] = self.thresholds
        self.reset(np.arange(old, capacity))

    def reset(self, slots: np.ndarray) -> None:
        """Forget the streams' smoothing, hold-offs, pending detection and classification count."""
        s = self._index(slots)
        self.recent[s] = 0
        self.unknown_ring[s] = 0
        self.scores[s] = 0
        self.n_classifications[s] = 0
        self.armed[s] = True
        self.last_detection_s[s] = -math.inf
        self.pending_label[s] = -1

    def step(self, slots: torch.Tensor, now_s: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One classification per stream (`slots` and `now_s` on the rule's device) → (does each row emit a
        detection, its label index, its peak score), device tensors over the rows of `slots`."""
        cfg, K, rows = self.config, self.smooth_n, torch.arange(len(slots), device=self.device)
        count = self.n_classifications[slots]
        ring = self.recent[slots]
        ring[rows, count % K] = probs
        self.recent[slots] = ring
        if self.context:
            self.unknown_ring[slots, count % self._ring] = probs[:, self.unknown_index]
        count = count + 1
        self.n_classifications[slots] = count
        total = ring[rows, count % K]  # oldest first, as DecisionRule sums
        for i in range(1, K):
            total = total + ring[rows, (count + i) % K]
        smoothed = total / torch.clamp(count, max=K).to(torch.float32)[:, None]
        self.scores[slots] = smoothed
        own = self.slot_thresholds[slots]
        armed = self.armed[slots] | (smoothed < own / 2)

        # a pending detection follows its score up to the peak, for at most peak_wait_ms, then is emitted
        label = self.pending_label[slots]
        waiting = label >= 0
        score = smoothed.gather(1, label.clamp(min=0)[:, None])[:, 0]
        peak = self.pending_peak[slots]
        since_s = self.pending_since_s[slots]
        rising = waiting & (score > peak) & ((now_s - since_s) * 1000 < cfg.peak_wait_ms - TIME_TOLERANCE_MS)
        peak = torch.where(rising, score, peak)
        ending = waiting & ~rising
        emit = ending & self._alone(slots, count) if self.context else ending
        last_s = torch.where(emit, now_s, self.last_detection_s[slots])

        # otherwise a keyword that leads, reaches its threshold, is armed and is past the refractory time starts one
        best = torch.where(self.keyword, smoothed, 0).argmax(dim=1)
        top = smoothed.gather(1, best[:, None])[:, 0]
        crossing = (~waiting & (top >= own.gather(1, best[:, None])[:, 0]) & self.keyword[best]
                    & (top >= smoothed.max(dim=1).values) & armed.gather(1, best[:, None])[:, 0]
                    & ((now_s - last_s) * 1000 >= cfg.refractory_ms - TIME_TOLERANCE_MS))
        self.armed[slots] = armed & ~(crossing[:, None] & (self._labels == best[:, None]))
        self.pending_label[slots] = torch.where(crossing, best, torch.where(ending, -1, label))
        self.pending_peak[slots] = torch.where(crossing, top, peak)
        self.pending_since_s[slots] = torch.where(crossing, now_s, since_s)
        self.last_detection_s[slots] = last_s
        return emit, label, peak

    def _alone(self, slots: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        back = count[:, None] - 1 - self.before
        made = back >= 0
        unknown = self.unknown_ring[slots[:, None], back % self._ring] * made
        total = unknown[:, 0]
        for j in range(1, unknown.shape[1]):
            total = total + unknown[:, j]
        return total / made.sum(dim=1).clamp(min=1).to(torch.float32) <= self.config.unknown_before_max
