"""The streaming recognizer: audio chunks in, `Detection`s out. Files, microphones and servers all use it.

Per chunk: validate → (resample if a different rate was declared) → log-mel frames, each computed once →
the model's window of frames → one classification every `hop_ms` → posteriors averaged over
`smoothing_ms` → when a keyword's smoothed score reaches its threshold, the detection is emitted at the
score's peak (at most `peak_wait_ms` later, so the word has ended); then that keyword is held off until its
score falls below half the threshold, and every keyword until `refractory_ms` has passed.

Decisions depend only on the samples, never on how they were chunked: feeding a file sample by sample or
all at once gives the same detections.

One engine serves one stream or thousands: `StreamBank` holds the state of any number of streams (pending
samples, the last window's frames, frame count, and the smoothing and hold-offs of `decision.DecisionRule`)
as arrays with one row per stream, so a step of many streams is a handful of batched operations and one
forward pass of all their due windows (through `inference.FoldedNet`, the model with its BatchNorms folded).
`Recognizer` is a bank of one stream; `multistream.MultiStreamRecognizer` is a bank of many. Both therefore
make the same decisions from the same samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio import StreamResampler, float32_and_peak
from .checkpoint import LoadedModel, load_model
from .config import DetectorConfig, from_dict
from .decision import DecisionRule, DeviceDecisionRule, default_hop_ms, hop_frames
from .inference import DEFAULT_THREADS, check_threads, inference_forward, intra_op_threads, onnxruntime_available

log = logging.getLogger(__name__)

MAX_BATCH_WINDOWS = 256  # windows per forward pass; also sizes a step of a single stream (256 hops of audio)
ACTIVE_RANGE_DB = 15.0  # frames within this of the loudest frame of the window count as the word
MAX_GAP_FRAMES = 8
# Steps of fewer rows than this take the hop session (frontend and network in one graph), lockstep or not: its
# mel is a product with a DFT, which for 256 lockstep streams cost 57 ms a hop against 55 for the FFT and separate
# calls, where for one stream one graph saves a third of the hop (docs/performance.md)
HOP_SESSION_MAX_ROWS = 32
# A Recognizer's block that completes up to this many new frames takes them one hop-session call at a time
# (`StreamBank.feed_one`); more take the general step, which batches them. At one stream, blocks of 2 frames cost
# 0.87x the general step that way, of 3 frames 1.07x (docs/performance.md).
LIVE_HOP_MAX_FRAMES = 2


@dataclass(frozen=True)
class Detection:
    """A recognized command: `start_s`/`end_s` are seconds from the start of the stream."""

    label: str
    score: float
    start_s: float
    end_s: float


def detector_config(model: LoadedModel | None = None, sensitivity: str | None = None, **options: Any) -> DetectorConfig:
    """DetectorConfig from keyword options (hop_ms, smoothing_ms, threshold, thresholds, refractory_ms); what
    they leave out comes from the model's named preset `sensitivity` when one is given, then from the settings the
    model carries (`LoadedModel.detector`), then from the defaults. A preset never takes the carried per-label
    `thresholds`: they were chosen beside the carried threshold, not the preset's."""
    settings = dict(model.detector) if model is not None else {}
    if sensitivity is not None:
        presets = model.sensitivity if model is not None else {}
        if sensitivity not in presets:
            raise ValueError(
                f"sensitivity={sensitivity!r} is not one of this model's presets "
                f"({', '.join(repr(p) for p in presets) or 'it carries none'}); pass one of them, or threshold= "
                "(and hop_ms=, smoothing_ms=) for settings of your own")
        settings.pop("thresholds", None)
        settings.update(presets[sensitivity])
    settings.update(options)
    if model is not None and "hop_ms" not in settings:
        settings["hop_ms"] = default_hop_ms(model.features.hop_ms)
    return from_dict(DetectorConfig, settings)


def check_chunk(chunk: np.ndarray | torch.Tensor, what: str = "Recognizer.feed") -> np.ndarray:
    """A chunk of mono audio (int16, or float32 in [-1, 1]) as float32, or a ValueError that says what to do."""
    samples, peak = float32_and_peak(chunk, what=what)
    if peak is not None and peak > 4.0:
        raise ValueError(
            f"{what}: float samples far beyond [-1, 1] (max |x| = {peak:.1f}) look like "
            "integer PCM stored as float; pass the int16 array itself or divide by 32768"
        )
    return samples


class StreamBank:
    """The state of `capacity` streams over one model, advanced by `feed`: one row per stream ("slot").

    Each slot keeps the samples of its frames not yet complete (< one analysis window), the last
    `window_frames - 1` log-mel frames, its frame count, and its DecisionRule row. A step appends new samples to
    any set of slots, computes their new frames in one batched log-mel, cuts every window that is due (one per
    `hop_ms` of frames), classifies all of them in batches of `max_batch_windows`, and applies the decision
    rule in stream order. Tensors live on the model's device, bookkeeping on the CPU. The decision rule runs
    where the posteriors are (`device_rule`, default: on a GPU), so a step of a GPU bank copies only the
    outcome of its decisions to the host, once. On a CPU device, steps in which every stream advances alike
    (one stream; streams fed in lockstep) run in numpy on the same memory: a live hop of one stream is a few
    small operations, and torch's per-call overhead was most of their cost. ONNX Runtime runs on `threads`
    intra-op threads, and on `batch_threads` (default: `threads`) for batches of
    `inference.BATCH_THREADS_MIN_ROWS` rows or more.
    """

    def __init__(self, model: LoadedModel, config: DetectorConfig, capacity: int = 1,
                 max_batch_windows: int = MAX_BATCH_WINDOWS, autocast_dtype: torch.dtype | None = None,
                 backend: str = "auto", threads: int | None = DEFAULT_THREADS, device_rule: bool | None = None,
                 batch_threads: int | None = None):
        self.model = model
        self.threads = check_threads(threads)
        self.batch_threads = check_threads(batch_threads)
        if autocast_dtype is not None and backend == "onnxruntime":
            raise ValueError("autocast runs on the torch backend: use backend='torch' (or 'auto') with it")
        self.backend = "torch" if autocast_dtype is not None else backend  # autocast is torch's
        self.config = config
        self.labels = model.labels
        c = self.features = model.features
        self.device = model.device
        self.frontend = model.frontend().to(self.device)
        self.window_frames = model.net.window_frames
        self.hop_frames = hop_frames(config, c.hop_ms)
        self.max_batch_windows = max_batch_windows
        self.autocast_dtype = autocast_dtype
        self.silence_value = self.frontend.silence_value  # a number (log-mel) or one frame (n_mels, 1) (embeddings)
        if isinstance(self.silence_value, torch.Tensor):
            self.silence_value = self.silence_value.to(self.device)
        self.locate_by_energy = c.kind == "logmel"  # only log-mel frames hold a frame's energy
        self.hop_samples, self.window_samples, self.sample_rate = c.hop_samples, c.window_samples, c.sample_rate
        if device_rule is None:
            device_rule = self.device.type == "cuda"
        self.rule = DeviceDecisionRule(self.labels, config, 0, self.device) if device_rule else DecisionRule(self.labels, config, 0)
        # (slots, stream times in s, posteriors) of each round of classifications, before the decision rule: for
        # tools that record a stream's posteriors once and replay the rule under other settings
        self.on_classified: Callable[[np.ndarray, np.ndarray, np.ndarray], Any] | None = None
        self.capacity = 0
        self._all_slots = np.zeros(0, np.int64)
        self.pending = torch.zeros(0, c.window_samples - 1, device=self.device)
        self.pending_len = np.zeros(0, np.int64)
        self.tail = torch.zeros(0, c.n_mels, self.window_frames - 1, device=self.device)
        # A frontend that streams (`stream(audio, state)`: the speech embedding) keeps per-slot state: what its
        # layers need of the frames already made, so that a new frame costs its new columns only. Rows of these
        # tensors are valid once the slot has made a frame (a slot with none starts from its first window).
        self.frontend_state: list[torch.Tensor] | None = None
        if hasattr(self.frontend, "stream"):
            with torch.inference_mode():
                _, state = self.frontend.stream(torch.zeros(1, c.window_samples, device=self.device), None)
            self.frontend_state = [torch.zeros(0, *t.shape[1:], device=self.device) for t in state]
        # Once a slot has made its first frame, such a frontend reads only the samples its new frames add
        # (`stream_samples`, 1632 of the embedding's 12512): the slot keeps no more, so a step copies an eighth.
        self.stream_samples = self.window_samples
        if self.frontend_state is not None:
            self.stream_samples = self.frontend.stream_samples
            if not self.hop_samples <= self.stream_samples <= self.window_samples:
                raise ValueError(f"the frontend's stream_samples {self.stream_samples} must lie in [hop_samples "
                                 f"{self.hop_samples}, window_samples {self.window_samples}]")
        # and on the CPU its streaming step runs on ONNX Runtime where the network does
        self._frontend_session = None
        self._hop_session = None  # (refresh_model makes it where it applies)
        if (self.frontend_state is not None and hasattr(self.frontend, "stream_session") and self.device.type == "cpu"
                and self.backend != "torch" and onnxruntime_available()):
            self._frontend_session = self.frontend.stream_session(self.threads or torch.get_num_threads(),
                                                                  self.batch_threads)
        self.n_frames = np.zeros(0, np.int64)
        self.n_samples = np.zeros(0, np.int64)  # stream samples consumed per slot (flush's padding excluded)
        self.grow(capacity)
        self.refresh_model()

    def refresh_model(self) -> None:
        """Take the model's weights as they are now (they are folded for inference once, not per hop)."""
        forward = inference_forward(self.model.net, self.backend, self.threads, self.batch_threads)
        self._probs = getattr(forward, "probs", None)  # a backend that gives posteriors as numpy directly
        # A step of up to LIVE_HOP_MAX_FRAMES hops per slot (live hops of the speech embedding), after the slots'
        # first frames and of fewer than HOP_SESSION_MAX_ROWS slots, runs as one graph call per hop: frontend and
        # network (embedding.HopSession, which makes a hop's `hop_frames` frames and classifies the window ending
        # at its last). Kept while the network is.
        if self._frontend_session is None or not hasattr(self.frontend, "hop_session") or self._probs is None:
            self._hop_session = None
        elif self._hop_session is None or forward is not self.forward:
            self._part_hops: dict[int, Any] = {}  # (`_hop_graph`)
            self._hop_session = self._new_hop_graph(forward, self.hop_frames)
        self.forward = forward

    def _new_hop_graph(self, forward, frames: int):  # -> embedding.HopSession
        """A hop session of `forward`'s network making `frames` frames a call, on the bank's threads."""
        return self.frontend.hop_session(forward.folded, self.window_frames, self.threads or torch.get_num_threads(),
                                         self.batch_threads, frames=frames)

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` slots; new slots start reset."""
        old = self.capacity
        if capacity <= old:
            return
        extra = capacity - old
        with torch.inference_mode():
            self.pending = torch.cat([self.pending, self.pending.new_zeros(extra, self.pending.shape[1])])
            self.tail = torch.cat([self.tail, self.tail.new_zeros(extra, *self.tail.shape[1:])])
            if self.frontend_state is not None:
                self.frontend_state = [torch.cat([t, t.new_zeros(extra, *t.shape[1:])]) for t in self.frontend_state]
        self.pending_len = np.concatenate([self.pending_len, np.zeros(extra, np.int64)])
        self.n_frames = np.concatenate([self.n_frames, np.zeros(extra, np.int64)])
        self.n_samples = np.concatenate([self.n_samples, np.zeros(extra, np.int64)])
        self.rule.grow(capacity)
        self.capacity = capacity
        self._all_slots = np.arange(capacity)
        self.reset(np.arange(old, capacity))

    def reset(self, slots: np.ndarray) -> None:
        """Forget the slots' samples, frames, smoothing, hold-offs and clocks."""
        slots = np.asarray(slots, np.int64)
        self.pending_len[slots] = 0
        with torch.inference_mode():
            self.tail[torch.from_numpy(slots).to(self.device)] = self.silence_value
        self.n_frames[slots] = 0
        self.n_samples[slots] = 0
        self.rule.reset(slots)

    def samples_until_due(self, slot: int) -> int:
        """How many more samples the slot needs before its next window is classified (at least 1): until then a
        feed only buffers, so a caller may hold samples back and feed them together at no change in decisions."""
        counted = int(self.n_frames[slot])
        first = (-counted - 1) % self.hop_frames  # the new frame that ends the next window
        return first * self.hop_samples + self._frame_samples(counted) - int(self.pending_len[slot])

    def _frame_samples(self, counted: int | np.ndarray) -> int | np.ndarray:
        """The samples a slot's next frame reads, after it has made `counted` frames (per slot for an array):
        a whole window for its first; only what the frame adds when the frontend streams."""
        return self.stream_samples + (self.window_samples - self.stream_samples) * (counted == 0)

    def _kept_from(self, n_new: int | np.ndarray, counted: int | np.ndarray) -> int | np.ndarray:
        """Where, in a step's samples, those the slot's next frame reads begin, after `n_new` new frames: one hop
        a frame, and after a first frame only what the next one adds (per slot for arrays)."""
        return n_new * self.hop_samples + (self.window_samples - self.stream_samples) * ((counted == 0) & (n_new > 0))

    def time_s(self, slot: int) -> float:
        """Stream time covered by the slot's frames so far."""
        c, n = self.features, int(self.n_frames[slot])
        return 0.0 if n == 0 else ((n - 1) * c.hop_samples + c.window_samples) / c.sample_rate

    def step_samples(self, n_streams: int) -> int:
        """How many samples of each stream one step takes: about max_batch_windows windows in all."""
        per_window = self.hop_frames * self.features.hop_samples
        return per_window * max(1, self.max_batch_windows // max(1, n_streams))

    def feed(self, slots: np.ndarray, audio: torch.Tensor, lengths: np.ndarray | None = None) -> list[tuple[int, Detection]]:
        """Append audio (n_streams, n_samples) float32 — row i to `slots[i]`, its first `lengths[i]` samples
        (default: all) — and return the detections as (slot, Detection), in stream order for each slot."""
        slots = np.asarray(slots, np.int64)
        n_samples = audio.shape[1]
        step = self.step_samples(len(slots))
        # state tensors are inference tensors: no autograd bookkeeping per op
        with torch.inference_mode(), intra_op_threads(self.threads):
            if lengths is None and n_samples <= step:  # the common live case: one step, every row full
                self.n_samples[slots] += n_samples
                return self._step(slots, audio, np.full(len(slots), n_samples, np.int64)) if n_samples else []
            lengths = np.full(len(slots), n_samples, np.int64) if lengths is None else np.asarray(lengths, np.int64)
            self.n_samples[slots] += lengths
            out: list[tuple[int, Detection]] = []
            for start in range(0, n_samples, step):
                taken = np.clip(lengths - start, 0, step)
                rows = np.flatnonzero(taken > 0)
                if len(rows) == 0:
                    break
                piece = audio[:, start : start + step]
                if len(rows) < len(slots):
                    piece = piece[torch.from_numpy(rows)]
                out += self._step(slots[rows], piece, taken[rows])
        return out

    def feed_one(self, samples: np.ndarray) -> list[tuple[int, Detection]]:
        """`feed` for a bank of one slot (a Recognizer's): float32 samples (n,). When they complete up to
        LIVE_HOP_MAX_FRAMES hops' worth of new frames after the slot's first, the frames go in hop-session calls
        (live hops of an embedding model), one per hop or part of one (`_segments`), and only this step's own
        bookkeeping runs: the general step's checks and contexts cost a tenth of such a hop (docs/performance.md).
        No torch operation runs there, so no thread setting is needed. Anything else goes to `feed`."""
        if self.capacity != 1:
            raise ValueError(f"feed_one is for a bank of one slot; this one has {self.capacity}: use feed(slots, audio)")
        counted, have = int(self.n_frames[0]), int(self.pending_len[0])
        total, frame, hop = have + len(samples), self.stream_samples, self.hop_samples
        n_new = max(total - frame + hop, 0) // hop  # (from here on, _step_uniform's bookkeeping for such a step)
        if not self._takes_hops(1, n_new, np.array([counted])):
            return self.feed(self._all_slots, torch.from_numpy(samples[None]))
        keep = self._kept_from(n_new, counted)
        self.n_samples[0] += len(samples)
        self.pending_len[0] = total - keep
        self.n_frames[0] = counted + n_new
        pending = self.pending.numpy()[0]
        buffer = np.concatenate([pending[:have], samples])
        pending[: total - keep] = buffer[keep:]
        found, at = [], 0
        with torch.inference_mode():  # (the hop session's buffers are inference tensors)
            for frames, ends_window in self._segments(counted, n_new):
                graph = self._hop_graph(frames)
                found += self._hop(self._all_slots, slice(0, 1), buffer[None, at * hop : at * hop + graph.samples],
                                   np.array([counted + at]), [(None, frames - 1)] if ends_window else [], graph)
                at += frames
        return found

    def _segments(self, counted: int, n_new: int) -> list[tuple[int, bool]]:
        """How a slot at `counted` frames makes `n_new` new ones in hop-session calls: (frames, whether the last
        ends a window) per call. Calls end where windows end (every `hop_frames`-th frame); a stream not lined up
        with its hop (its first step made another number of frames, or a block ended mid-hop) first makes the
        frames up to the next window's end, and frames after the last window's end go in a call of their own."""
        h, out, at = self.hop_frames, [], 0
        while at < n_new:
            frames = min((-(counted + at)) % h or h, n_new - at)
            at += frames
            out.append((frames, (counted + at) % h == 0))
        return out

    def _hop_graph(self, frames: int):  # -> embedding.HopSession
        """The hop session making `frames` frames a call: the bank's own for a whole hop, another made on first
        use for part of one (a stream lining up with its hop)."""
        if frames == self.hop_frames:
            return self._hop_session
        if frames not in self._part_hops:
            self._part_hops[frames] = self._new_hop_graph(self.forward, frames)
        return self._part_hops[frames]

    def flush(self, slots: np.ndarray, heads: list[np.ndarray]) -> list[tuple[int, Detection]]:
        """End of stream for `slots`: feed each its last samples (`heads`, e.g. a resampler's remainder), then
        half a window of silence so that its last word is classified. A word located partly in that padding
        still ends with the stream: detections are clipped to each stream's end."""
        slots = np.asarray(slots, np.int64)
        pad = round(self.model.net.config.window_s * self.sample_rate / 2)
        lengths = np.array([len(h) for h in heads], np.int64) + pad
        block = np.zeros((len(slots), int(lengths.max(initial=pad))), np.float32)
        for row, head in enumerate(heads):
            block[row, : len(head)] = head
        end_s = dict(zip(slots.tolist(), ((self.n_samples[slots] + lengths - pad) / self.sample_rate).tolist()))
        found = self.feed(slots, torch.from_numpy(block), lengths)
        self.n_samples[slots] -= pad
        return [(slot, dataclasses.replace(d, start_s=min(d.start_s, end_s[slot]), end_s=min(d.end_s, end_s[slot])))
                for slot, d in found]

    def _step(self, slots: np.ndarray, piece: torch.Tensor, taken: np.ndarray) -> list[tuple[int, Detection]]:
        if piece.device != self.device or piece.dtype != torch.float32:
            piece = piece.to(self.device, torch.float32, non_blocking=True)
        have, counted = self.pending_len[slots], self.n_frames[slots]
        n = len(slots)
        prefix = slots[0] == 0 if n == 1 else bool(slots[0] == 0 and slots[-1] == n - 1 and (slots == self._all_slots[:n]).all())
        index = slice(0, n) if prefix else slots  # slices read views, index arrays copy
        # Uniform steps (one stream; or streams fed in lockstep) line up: every row has the same number of pending
        # and new samples, reads as many per frame, and has its windows at the same columns, so scalars and slices
        # do what arrays and gathers do.
        if n == 1 or bool((have == have[0]).all() and (taken == taken[0]).all() and ((counted == 0) == (counted[0] == 0)).all()
                          and ((counted - counted[0]) % self.hop_frames == 0).all()):
            return self._step_uniform(slots, index, piece, int(have[0]), int(taken[0]), counted)
        return self._step_ragged(slots, index, piece, have, taken, counted)

    def _step_uniform(self, slots: np.ndarray, index: slice | np.ndarray, piece: torch.Tensor, have: int, taken: int,
                      counted: np.ndarray) -> list[tuple[int, Detection]]:
        T, h, hop = self.window_frames, self.hop_frames, self.hop_samples
        W = self._frame_samples(int(counted[0]))  # the samples a frame reads
        total = have + taken
        n_new = max(total - W + hop, 0) // hop  # complete frames among the pending and new samples
        first = (-int(counted[0]) - 1) % h  # index among the new frames of the first window's last frame
        n_due = max(n_new - first + h - 1, 0) // h
        keep = self._kept_from(n_new, int(counted[0]))
        rest = total - keep  # (< W)
        self.pending_len[index] = rest
        self.n_frames[index] = counted + n_new
        rounds = [(None, first + r * h) for r in range(n_due)]
        if self.device.type == "cpu":
            # numpy on the CPU: the same operations with a fraction of torch's per-call overhead, which is most of
            # a live hop's bookkeeping (the state tensors share their memory with these arrays)
            pending, tail = self.pending.numpy(), self.tail.numpy()
            buffer = np.concatenate([pending[index, :have], piece.numpy()[:, :taken]], axis=1)
            pending[index, :rest] = buffer[:, keep:]  # (columns past pending_len: never read)
            if n_new == 0:
                return []
            if self._takes_hops(len(slots), n_new, counted):
                return self._hops(slots, index, buffer, counted, np.full(len(slots), n_new))
            history = np.concatenate([tail[index], self._frames(slots, index, buffer[:, : (n_new - 1) * hop + W], n_new, counted)], axis=2)
            tail[index] = history[:, :, n_new:]
            if n_due == 0:
                return []
            if n_due == 1:
                windows = np.ascontiguousarray(history[:, :, first : first + T])
            else:
                columns = first + h * np.arange(n_due) + np.arange(T)[:, None]
                windows = history[:, :, columns].transpose(3, 0, 1, 2).reshape(-1, history.shape[1], T)
            return self._decide(slots, counted, rounds, torch.from_numpy(windows))
        rows = index if isinstance(index, slice) else torch.from_numpy(index).to(self.device)
        # 1. samples: the slots' pending samples followed by their new ones
        buffer = torch.cat([self.pending[rows, :have], piece[:, :taken]], dim=1)
        self.pending[rows, :rest] = buffer[:, keep:]  # (columns past pending_len: never read)
        if n_new == 0:
            return []
        # 2. frames: the slots' last window_frames - 1 frames followed by their new ones
        history = torch.cat([self.tail[rows], self._frames(slots, index, buffer[:, : (n_new - 1) * hop + W], n_new, counted)], dim=2)
        self._write("tail", rows, history[:, :, n_new:])
        if n_due == 0:
            return []
        # 3. due windows, round-major (round r holds every slot's r-th window)
        if n_due == 1:
            windows = history[:, :, first : first + T]
        else:
            columns = torch.from_numpy(first + h * np.arange(n_due) + np.arange(T)[:, None]).to(self.device)
            windows = history[:, :, columns].permute(3, 0, 1, 2).reshape(-1, history.shape[1], T)
        return self._decide(slots, counted, rounds, windows)

    def _step_ragged(self, slots: np.ndarray, index: slice | np.ndarray, piece: torch.Tensor, have: np.ndarray,
                     taken: np.ndarray, counted: np.ndarray) -> list[tuple[int, Detection]]:
        dev, T, h, hop, W = self.device, self.window_frames, self.hop_frames, self.hop_samples, self.window_samples
        total = have + taken
        n_new = np.maximum(total - self._frame_samples(counted) + hop, 0) // hop
        first = (-counted - 1) % h
        n_due = np.maximum(n_new - first + h - 1, 0) // h
        keep = self._kept_from(n_new, counted)
        rest = total - keep
        self.pending_len[index] = rest
        self.n_frames[index] = counted + n_new
        rows = index if isinstance(index, slice) else torch.from_numpy(index).to(dev)
        # 1. samples, row by row at its own offset (columns past a row's new samples hold padding: never read)
        held = int(have.max())
        width = held + piece.shape[1]
        buffer = piece.new_zeros(len(slots), width)
        buffer[:, :held] = self.pending[rows, :held]
        columns = torch.from_numpy(have).to(dev)[:, None] + torch.arange(piece.shape[1], device=dev)
        buffer.scatter_(1, columns, piece)
        columns = torch.from_numpy(keep).to(dev)[:, None] + torch.arange(int(rest.max()), device=dev)
        self.pending[rows, : columns.shape[1]] = buffer.gather(1, columns.clamp_(max=width - 1))
        n_max = int(n_new.max())
        if n_max == 0:
            return []
        if self._takes_hops(len(slots), n_new, counted):
            return self._hops(slots, index, buffer.numpy(), counted, n_new)
        # 2. frames (rows with fewer new frames than n_max end in frames of padding, which no window reaches)
        history = torch.cat([self.tail[rows], self._frames(slots, index, buffer[:, : (n_max - 1) * hop + W], n_new, counted)], dim=2)
        columns = torch.from_numpy(n_new).to(dev)[:, None] + torch.arange(T - 1, device=dev)
        self._write("tail", rows, history.gather(2, columns[:, None, :].expand(-1, history.shape[1], -1)))
        # 3. due windows, round-major
        rounds = [(n_due > r).nonzero()[0] for r in range(int(n_due.max()))]
        if not rounds:
            return []
        ends = [first[r] + i * h for i, r in enumerate(rounds)]
        at = torch.from_numpy(np.concatenate(ends)).to(dev)
        windows = history.unfold(2, T, 1)[torch.from_numpy(np.concatenate(rounds)).to(dev), :, at]
        return self._decide(slots, counted, list(zip(rounds, ends)), windows)

    def _takes_hops(self, n_rows: int, n_new: int | np.ndarray, counted: np.ndarray) -> bool:
        """Whether a step's new frames (`n_new`: per row, or one count for all) go in hop-session calls (`_hops`):
        on the CPU, for fewer than HOP_SESSION_MAX_ROWS slots, each past its first frame, with at most
        LIVE_HOP_MAX_FRAMES hops' worth of new frames."""
        return (self._hop_session is not None and n_rows < HOP_SESSION_MAX_ROWS and bool((counted > 0).all())
                and 0 < np.max(n_new) <= LIVE_HOP_MAX_FRAMES * self.hop_frames)

    def _hops(self, slots: np.ndarray, index: slice | np.ndarray, buffer: np.ndarray, counted: np.ndarray,
              n_new: np.ndarray) -> list[tuple[int, Detection]]:
        """The frames, windows and decisions of a step that `_takes_hops`, from its samples `buffer` (row i: the
        slot's pending samples, then its new ones), in hop-session calls as a Recognizer's live hops, instead of
        the batched log-mel, CNN and classifier calls and the glue between them. Rows that make their frames in
        the same calls (`_segments`: at a hop of one frame, a call a frame) take them together, call by call, so
        each slot's decisions stay in stream order."""
        hop, h, found = self.hop_samples, self.hop_frames, []
        calls: dict[tuple[int, int, bool, int], list[int]] = {}  # (j, frames, ends a window, first frame): rows
        phase = counted % h * (LIVE_HOP_MAX_FRAMES * h + 1) + n_new  # (a row's calls depend on these two only)
        for key in np.unique(phase[n_new > 0]).tolist():
            rows = np.flatnonzero(phase == key)
            at = 0
            for j, (frames, ends_window) in enumerate(self._segments(int(counted[rows[0]]), int(n_new[rows[0]]))):
                calls.setdefault((j, frames, ends_window, at), []).extend(rows.tolist())
                at += frames
        for (_, frames, ends_window, at), rows in sorted(calls.items()):  # every row's j-th call before its j+1-th
            graph, rows = self._hop_graph(frames), np.sort(np.array(rows, np.int64))
            rounds = [(None, at + frames - 1)] if ends_window else []
            if len(rows) == len(slots):
                found += self._hop(slots, index, buffer[:, at * hop : at * hop + graph.samples], counted, rounds, graph)
            else:
                found += self._hop(slots[rows], slots[rows], buffer[rows, at * hop : at * hop + graph.samples],
                                   counted[rows], rounds, graph)
        return found

    def _frames(self, slots: np.ndarray, index: slice | np.ndarray, audio: np.ndarray | torch.Tensor,
                n_new: int | np.ndarray, counted: np.ndarray) -> np.ndarray | torch.Tensor:
        """The slots' `n_new` new frames (an int, or one per row) from their samples `audio` (rows, n_samples, numpy or
        torch; the returned frames alike); `index` is `_step`'s for the slots (a slice when they are the first
        ones). Through the frontend's stream state where it keeps one, in groups of rows alike (as many new frames;
        a first frame or not); a row with fewer frames than the most ends in zeros, which no window reads."""
        if self.frontend_state is None:
            return self.frontend.numpy(audio) if isinstance(audio, np.ndarray) else self.frontend(audio)
        x = torch.from_numpy(audio) if isinstance(audio, np.ndarray) else audio
        hop = self.hop_samples
        if np.ndim(n_new) == 0:  # a uniform step: one group, every row (most hops; cheaper to say than to find)
            groups = [(int(n_new), bool(counted[0] == 0), None)]
        else:
            keys = n_new * 2 + (counted == 0)
            groups = [(key // 2, bool(key % 2), np.flatnonzero(keys == key)) for key in np.unique(keys[n_new > 0]).tolist()]
        n_max = max(n for n, _, _ in groups)
        out = None
        for n, first, members in groups:
            # first frames run the network over whole windows: at most max_batch_windows rows at a time bounds
            # their activations (thousands of streams that start together on a GPU)
            if members is None and (not first or len(slots) <= self.max_batch_windows):
                parts = [None]  # every row
            else:
                members = np.arange(len(slots)) if members is None else members
                size = self.max_batch_windows if first else len(members)
                parts = [members[i : i + size] for i in range(0, len(members), size)]
            for rows in parts:
                whole = rows is None or len(rows) == len(slots)
                at = slice(None) if whole else torch.from_numpy(rows).to(self.device)
                held = index if whole and isinstance(index, slice) else \
                    torch.from_numpy(slots if rows is None else slots[rows]).to(self.device)
                state = None if first else self._frontend_state_of(held)
                frames, state = self.frontend.stream(x[at, : (n - 1) * hop + (self.window_samples if first else self.stream_samples)],
                                                     state, session=self._frontend_session)
                self._keep_frontend_state(held, state)
                if whole and n == n_max:
                    out = frames
                else:
                    if out is None:
                        out = x.new_zeros(len(slots), frames.shape[1], n_max)
                    out[at, :, :n] = frames
        return out.numpy() if isinstance(audio, np.ndarray) else out

    def _hop(self, slots: np.ndarray, index: slice | np.ndarray, audio: np.ndarray, counted: np.ndarray,
             rounds: list[tuple[np.ndarray | None, Any]], graph) -> list[tuple[int, Detection]]:
        """A uniform step of one hop per slot (its new frames, the last ending a window unless `rounds` is empty),
        after the slots' first frames: the frames, the window and its posteriors in one call of `graph`, a hop
        session (`audio`: the samples the frames read), the frontend state and the kept frames written back,
        then the decision rule."""
        if self._every_slot(index):  # the state stays in the session's buffers
            probs, self.tail, self.frontend_state = graph.kept(audio, self.frontend_state, self.tail)
        else:
            held = index if isinstance(index, slice) else torch.from_numpy(slots)
            tail = self.tail.numpy()
            probs, tail[index], state = graph(audio, self._frontend_state_of(held), tail[index])
            self._keep_frontend_state(held, state)
        return self._decide(slots, counted, rounds, None, probs) if rounds else []

    def _every_slot(self, rows: slice | np.ndarray | torch.Tensor) -> bool:
        """Whether `rows` are every slot in order (a step's slice of them all): their state is then taken and kept
        as it is, without a gather and a scatter."""
        return isinstance(rows, slice) and rows.stop == self.capacity

    def _frontend_state_of(self, rows: slice | torch.Tensor) -> list[torch.Tensor]:
        """The frontend state of `rows`."""
        return self.frontend_state if self._every_slot(rows) else [t[rows] for t in self.frontend_state]

    def _keep_frontend_state(self, rows: slice | torch.Tensor, state: list[torch.Tensor]) -> None:
        """Store `state` as the frontend state of `rows`."""
        if self._every_slot(rows):
            self.frontend_state = list(state)
        else:
            for t, new in zip(self.frontend_state, state):
                t[rows] = new

    def _decide(self, slots: np.ndarray, counted: np.ndarray, rounds: list[tuple[np.ndarray | None, Any]],
                windows: torch.Tensor | None, probs: np.ndarray | None = None) -> list[tuple[int, Detection]]:
        """Classify the windows (unless their posteriors `probs` are given: windows may then be None, as a model
        over embeddings never reads them again), then apply the decision rule round by round. A round is (rows of
        `slots`, or None for all; the new-frame index of each row's window end)."""
        if isinstance(self.rule, DeviceDecisionRule):
            return self._decide_on_device(slots, counted, rounds, windows, probs)
        if probs is None:
            probs = self._classify(windows)
        out: list[tuple[int, Detection]] = []
        at = 0
        for rows, end in rounds:
            stepped = slots if rows is None else slots[rows]
            now_s = self._now_s(counted if rows is None else counted[rows], end)
            if self.on_classified is not None:
                self.on_classified(stepped, now_s, probs[at : at + len(stepped)])
            emit, labels, peaks = self.rule.step(stepped, now_s, probs[at : at + len(stepped)])
            if len(emit):
                out += self._detections(stepped[emit], now_s[emit], labels, peaks, windows, at + emit)
            at += len(stepped)
        return out

    def _decide_on_device(self, slots: np.ndarray, counted: np.ndarray, rounds: list[tuple[np.ndarray | None, Any]],
                          windows: torch.Tensor | None, probs: np.ndarray | None = None) -> list[tuple[int, Detection]]:
        """`_decide` with the rule's state and the posteriors on the device: every round is stepped there, and
        the outcome of all of them comes to the host in one copy."""
        probs = self._posteriors(windows) if probs is None else torch.from_numpy(probs).to(self.device)
        device_slots = torch.from_numpy(slots).to(self.device)
        outcomes, stepped_all, now_all = [], [], []
        at = 0
        for rows, end in rounds:
            stepped = slots if rows is None else slots[rows]
            now_s = self._now_s(counted if rows is None else counted[rows], end)
            if self.on_classified is not None:
                self.on_classified(stepped, now_s, probs[at : at + len(stepped)].cpu().numpy())
            index = device_slots if rows is None else device_slots[torch.from_numpy(rows).to(self.device)]
            outcomes.append(self.rule.step(index, torch.from_numpy(now_s).to(self.device), probs[at : at + len(stepped)]))
            stepped_all.append(stepped)
            now_all.append(now_s)
            at += len(stepped)
        emit, labels, peaks = (torch.cat(parts) for parts in zip(*outcomes))
        emit, labels, peaks = torch.stack([emit.float(), labels.float(), peaks.float()]).cpu().numpy()
        rows = np.flatnonzero(emit)
        if len(rows) == 0:
            return []
        stepped, now_s = np.concatenate(stepped_all)[rows], np.concatenate(now_all)[rows]
        return self._detections(stepped, now_s, labels[rows].astype(np.int64), peaks[rows], windows, rows)

    def _now_s(self, counted: np.ndarray, end: Any) -> np.ndarray:
        """Stream times at the ends of the windows whose last frame is new frame `end` of slots at `counted` frames."""
        return ((counted + end) * self.hop_samples + self.window_samples) / self.sample_rate

    def _detections(self, stepped: np.ndarray, now_s: np.ndarray, labels: np.ndarray, peaks: np.ndarray,
                    windows: torch.Tensor, at: np.ndarray) -> list[tuple[int, Detection]]:
        """(slot, Detection) for emitted detections: slots, times of their windows' ends, labels, peak scores and
        the windows' indices in `windows` (log-mel windows locate the word by its frames' energies)."""
        if len(stepped) == 0:
            return []
        if not self.locate_by_energy:
            span_s = self.model.net.config.window_s
            return [(slot, Detection(self.labels[label], round(peak, 4), round(max(0.0, end_s - span_s), 3), round(end_s, 3)))
                    for slot, end_s, label, peak in zip(stepped.tolist(), now_s.tolist(), labels.tolist(), peaks.tolist())]
        # every emitted window's frame energies in one batched op and one device-to-host copy: one per detection
        # cost a GPU round trip each, the largest part of a hop of thousands of streams
        energy_db = self._energy_db(windows[torch.as_tensor(at, device=windows.device)])
        out = []
        for slot, end_s, label, peak, energy in zip(stepped.tolist(), now_s.tolist(), labels.tolist(), peaks.tolist(), energy_db):
            start_s, end_s = self._locate(energy, end_s)
            out.append((slot, Detection(self.labels[label], round(peak, 4), start_s, end_s)))
        return out

    def _write(self, name: str, rows: slice | torch.Tensor, value: torch.Tensor) -> None:
        """Store the stepped slots' rows back into state tensor `name`."""
        if self._every_slot(rows):
            setattr(self, name, value)  # keep the new tensor, no copy
        else:
            getattr(self, name)[rows] = value

    def _classify(self, windows: torch.Tensor) -> np.ndarray:
        """Posteriors (n_windows, n_classes) as float32 on the CPU."""
        if self._probs is not None:
            return self._probs(windows.numpy())
        return self._posteriors(windows).cpu().numpy()

    def _posteriors(self, windows: torch.Tensor) -> torch.Tensor:
        """Posteriors (n_windows, n_classes) as float32 on the windows' device."""
        if self._probs is not None:
            return torch.from_numpy(self._probs(windows.numpy()))
        with self._autocast():
            if len(windows) <= self.max_batch_windows:
                return torch.softmax(self.forward(windows).float(), dim=1)
            return torch.cat([torch.softmax(self.forward(windows[i : i + self.max_batch_windows]).float(), dim=1)
                              for i in range(0, len(windows), self.max_batch_windows)])

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, self.autocast_dtype)

    @staticmethod
    def _energy_db(windows: torch.Tensor) -> np.ndarray:
        """Each frame's energy in dB (n_windows, n_frames), from log-mel windows (n_windows, n_mels, n_frames)."""
        return (10 / math.log(10) * torch.logsumexp(windows.float(), dim=1)).cpu().numpy()

    def _locate(self, energy_db: np.ndarray, end_of_window_s: float) -> tuple[float, float]:
        """Where the word is in the window: the run of loud frames around the loudest one (`energy_db`: its
        frames' energies from `_energy_db`)."""
        c = self.features
        peak = int(energy_db.argmax())
        active = (energy_db >= energy_db[peak] - ACTIVE_RANGE_DB).tolist()
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


class Recognizer:
    """Streaming keyword recognizer.

    Args:
        model: a shipped model name, a checkpoint path, a LoadedModel, or None for the default model.
        on_detection: called with each Detection as it happens; exceptions it raises are logged, not raised.
        sample_rate: rate of the audio you will feed; other than the model's rate it is resampled.
        device: "cpu", "cuda" or None (CUDA when available).
        backend: how the network runs: "auto" (ONNX Runtime on the CPU when it is installed, torch otherwise),
            "torch", or "onnxruntime". Both give the same posteriors up to float rounding (~1e-6).
        threads: intra-op threads of its inference (torch and ONNX Runtime), default 1: a hop is too small for
            more to pay, and more cost 6-18x on a busy host. Set only around the Recognizer's own work, never
            for the rest of your program; None uses torch's setting as you left it.
        sensitivity: a named operating point the model carries, chosen on real validation voices:
            "few_false_alarms", "balanced" (what the model uses when none is named) or "find_everything"; the
            model card gives each one's keywords found and false alarms per hour on real speech. Detector options
            given beside it override its settings.
        **detector_options: fields of DetectorConfig (hop_ms, smoothing_ms, threshold, thresholds, refractory_ms),
            for experts: they override the model's settings and the preset's.

    `feed` only buffers until the next window is due (one per `hop_ms`), so its cost per second of audio is the
    same for 10 ms chunks as for 100 ms ones, and the decisions are those of any other chunking.
    Not thread-safe: use one Recognizer per stream (they may share one LoadedModel). The model's weights are
    read when the Recognizer is made and at each `reset()`. For many concurrent streams in one process,
    `multistream.MultiStreamRecognizer` batches them into shared forward passes.
    """

    def __init__(
        self,
        model: str | LoadedModel | None = None,
        on_detection: Callable[[Detection], Any] | None = None,
        sample_rate: int = 16000,
        device: str | torch.device | None = None,
        backend: str = "auto",
        threads: int | None = DEFAULT_THREADS,
        sensitivity: str | None = None,
        **detector_options: Any,
    ):
        self.model = load_model(model, device=device)
        self.config = detector_config(self.model, sensitivity, **detector_options)
        self.on_detection = on_detection
        features = self.model.features
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self.labels = self.model.labels
        unknown = set(self.config.thresholds) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds for unknown labels {sorted(unknown)}; the model's labels are {self.labels}")
        self._resampler = StreamResampler(sample_rate, features.sample_rate) if sample_rate != features.sample_rate else None
        self._bank = StreamBank(self.model, self.config, capacity=1, backend=backend, threads=threads)
        self._slot = np.zeros(1, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all state: buffered audio, frames, smoothing, hold-offs and the stream clock."""
        if self._resampler is not None:
            self._resampler.reset()
        self._bank.reset(self._slot)
        self._bank.refresh_model()
        self._held: list[np.ndarray] = []  # samples not yet given to the bank: no window is due before they are
        self._n_held = 0
        self._due_in = self._bank.samples_until_due(0)

    @property
    def scores(self) -> dict[str, float]:
        """The last smoothed posterior of every label (all 0.0 before the first classification)."""
        return dict(zip(self.labels, self._bank.rule.scores[0].tolist()))

    @property
    def n_classifications(self) -> int:
        """Windows classified since the start (or the last reset)."""
        return int(self._bank.rule.n_classifications[0])

    @property
    def time_s(self) -> float:
        """Stream time covered by the frames computed so far."""
        return self._bank.time_s(0)

    def feed(self, chunk: np.ndarray | torch.Tensor) -> list[Detection]:
        """Add a chunk of mono audio (any length; int16 or float32 in [-1, 1]); return new detections."""
        samples = check_chunk(chunk)
        if self._resampler is not None:
            samples = self._resampler.feed(samples)
        return self._consume(samples)

    def flush(self) -> list[Detection]:
        """End of stream: push half a window of silence through so the last word is classified; emit it."""
        head = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
        head = np.concatenate([*self._take_held(), head])
        found = self._bank.flush(self._slot, [head])
        self._due_in = self._bank.samples_until_due(0)
        return self._emit_all([d for _, d in found])

    def _consume(self, samples: np.ndarray) -> list[Detection]:
        if samples.size == 0:
            return []
        self._held.append(samples.copy())  # the caller may reuse its buffer once feed returns
        self._n_held += len(samples)
        if self._n_held < self._due_in:
            return []
        held = self._take_held()
        block = held[0] if len(held) == 1 else np.concatenate(held)
        # up to the last window's end in the block; the rest (less than a hop) waits for the next feed, so that
        # each feed ends where a window does and a hop of several frames stays one call (StreamBank._segments)
        hop = self._bank.hop_frames * self._bank.hop_samples
        cut = self._due_in + (len(block) - self._due_in) // hop * hop
        if cut < len(block):
            self._held, self._n_held = [block[cut:].copy()], len(block) - cut  # (not a view of a long block)
            block = block[:cut]
        found = self._bank.feed_one(block)
        self._due_in = self._bank.samples_until_due(0)
        return self._emit_all([d for _, d in found])

    def _take_held(self) -> list[np.ndarray]:
        held, self._held, self._n_held = self._held, [], 0
        return held

    def _emit_all(self, detections: list[Detection]) -> list[Detection]:
        for detection in detections:
            self._emit(detection)
        return detections

    def _emit(self, detection: Detection) -> None:
        if self.on_detection is None:
            return
        try:
            self.on_detection(detection)
        except Exception:
            log.exception("on_detection callback raised for %s; the stream goes on", detection)
