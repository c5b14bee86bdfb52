"""Many concurrent streams, one model: the windows of all streams that are due go through one forward pass.

    rec = MultiStreamRecognizer(device="cuda")
    a, b = rec.add_stream(), rec.add_stream(sample_rate=48000)
    rec.feed({a: chunk_a, b: chunk_b})          # any lengths → {stream: [Detection, ...]} for streams that detected
    rec.feed_many(block)                         # (n_streams, n_samples), every stream at once: the fast path

Each stream keeps its own state (pending samples, frames, smoothing, hold-offs, clock) as one row of a
`stream.StreamBank`, the engine `Recognizer` runs on too, so a stream's detections are the ones a
`Recognizer` fed the same audio alone would make, however the streams' chunks interleave (up to float
rounding in batched forward passes: scores agree to ~1e-6, detections are the same).

Streams fed in lockstep (the same number of samples each, as a server draining every connection once per hop
does) are advanced with slices and one batched log-mel and forward pass per step; ragged chunks take a
gather/scatter path. Only stream bookkeeping that Python must do per stream (validation and resampling in
`feed`) grows with the number of streams; `feed_many` does neither per stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .audio import StreamResampler
from .checkpoint import LoadedModel, load_model
from .inference import DEFAULT_THREADS, intra_op_threads
from .stream import MAX_BATCH_WINDOWS, Detection, StreamBank, check_chunk, detector_config

log = logging.getLogger(__name__)

CUDA_MAX_BATCH_WINDOWS = 4096
AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class MultiStreamRecognizer:
    """Streaming keyword recognizer for many concurrent streams sharing one model and its forward passes.

    Args:
        model: a shipped model name, a checkpoint path, a LoadedModel, or None for the default model.
        on_detection: called as `on_detection(stream, detection)` for each detection as it happens; exceptions
            it raises are logged, not raised.
        device: "cpu", "cuda" or None (CUDA when available).
        max_batch_windows: windows per forward pass (default 256 on CPU, 4096 on CUDA).
        autocast: None (float32: exactly the Recognizer's decisions) or "float16"/"bfloat16" to run the
            forward pass in that precision (faster on GPUs; scores then differ by ~1e-3; runs on torch).
        backend: "auto", "torch" or "onnxruntime", as for `stream.Recognizer`.
        threads: intra-op threads of its inference, default 1, set only around its own work (None: torch's
            setting as you left it); as for `stream.Recognizer`.
        batch_threads: ONNX Runtime's intra-op threads for steps of `inference.BATCH_THREADS_MIN_ROWS` (32)
            streams or windows or more (default: `threads`). A process that serves many streams and owns its
            cores (`drsn-asr serve`) gives its cores here: on 2 cores, 2 threads ran a step of 32-128 streams
            1.2-1.4x faster, where a few streams' step only slows down with more threads.
        device_rule: run the decision rule as tensor operations on the model's device (default: on a GPU, where
            it saves copying every posterior to the host), or in numpy on the host (False). The same decisions.
        **detector_options: fields of DetectorConfig (hop_ms, smoothing_ms, threshold, thresholds, refractory_ms).

    Not thread-safe: call it from one thread (a server's inference thread) and hand results back.
    """

    def __init__(
        self,
        model: str | LoadedModel | None = None,
        on_detection: Callable[[Hashable, Detection], Any] | None = None,
        device: str | torch.device | None = None,
        max_batch_windows: int | None = None,
        autocast: str | None = None,
        backend: str = "auto",
        threads: int | None = DEFAULT_THREADS,
        device_rule: bool | None = None,
        batch_threads: int | None = None,
        **detector_options: Any,
    ):
        self.model = load_model(model, device=device)
        self.config = detector_config(self.model, **detector_options)
        self.on_detection = on_detection
        self.labels = self.model.labels
        unknown = set(self.config.thresholds) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds for unknown labels {sorted(unknown)}; the model's labels are {self.labels}")
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be None or one of {', '.join(AUTOCAST_DTYPES)}, got {autocast!r}")
        if max_batch_windows is None:
            max_batch_windows = CUDA_MAX_BATCH_WINDOWS if self.model.device.type == "cuda" else MAX_BATCH_WINDOWS
        if not isinstance(max_batch_windows, int) or max_batch_windows < 1:
            raise ValueError(f"max_batch_windows must be a positive int, got {max_batch_windows!r}")
        self._bank = StreamBank(self.model, self.config, capacity=0, max_batch_windows=max_batch_windows,
                                autocast_dtype=AUTOCAST_DTYPES.get(autocast), backend=backend, threads=threads,
                                batch_threads=batch_threads, device_rule=device_rule)
        self._slots: dict[Hashable, int] = {}  # stream → slot, in the order streams were added
        self._keys: list[Hashable | None] = []  # slot → stream (None: free)
        self._free: list[int] = []
        self._resamplers: dict[Hashable, StreamResampler] = {}
        self._next_id = 0
        self._all: tuple[list[Hashable], np.ndarray] | None = None  # cached (streams, slots) for feed_many

    # -- streams ---------------------------------------------------------------------------------------------
    def add_stream(self, stream: Hashable | None = None, sample_rate: int = 16000,
                   thresholds: Mapping[str, float] | None = None) -> Hashable:
        """Start a stream (a new id when `stream` is None) of audio at `sample_rate`; return its id.

        `thresholds` ({label: threshold}) override the recognizer's for this stream alone, e.g. a threshold
        above 1 for the commands a client did not ask for (they then never fire)."""
        if stream is None:
            while self._next_id in self._slots:
                self._next_id += 1
            stream = self._next_id
        if stream in self._slots:
            raise ValueError(f"stream {stream!r} already exists; remove_stream() it first or pick another id")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}")
        rate = self.model.features.sample_rate
        resampler = StreamResampler(sample_rate, rate) if sample_rate != rate else None  # checks the rate first
        unknown = set(thresholds or {}) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds for unknown labels {sorted(unknown)}; the model's labels are {self.labels}")
        own = {self.labels.index(k): float(v) for k, v in (thresholds or {}).items()}
        if not self._free:
            old = self._bank.capacity
            self._bank.grow(max(1, 2 * old))
            self._keys += [None] * (self._bank.capacity - old)
            self._free = list(range(self._bank.capacity - 1, old - 1, -1))
        slot = self._free.pop()  # free slots are reset: new ones by grow(), freed ones by remove_stream()
        self._bank.rule.set_thresholds(np.array([slot]), own)
        self._slots[stream] = slot
        self._keys[slot] = stream
        if resampler is not None:
            self._resamplers[stream] = resampler
        self._all = None
        return stream

    def remove_stream(self, stream: Hashable) -> None:
        """End a stream and forget it (without flushing: call `flush([stream])` first to hear its last word)."""
        slot = self._slot(stream)
        del self._slots[stream]
        self._bank.reset(np.array([slot]))
        self._keys[slot] = None
        self._free.append(slot)
        self._resamplers.pop(stream, None)
        self._all = None

    @property
    def streams(self) -> list[Hashable]:
        """The streams, in the order they were added."""
        return list(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, stream: Hashable) -> bool:
        return stream in self._slots

    def reset(self, stream: Hashable | None = None) -> None:
        """Forget one stream's state (all streams' when None): audio, frames, smoothing, hold-offs and clock."""
        streams = list(self._slots) if stream is None else [stream]
        for s in streams:
            if s in self._resamplers:
                self._resamplers[s].reset()
        self._bank.reset(np.array([self._slot(s) for s in streams], np.int64))
        self._bank.refresh_model()

    def scores(self, stream: Hashable) -> dict[str, float]:
        """The stream's last smoothed posterior of every label."""
        return dict(zip(self.labels, self._bank.rule.scores[self._slot(stream)].tolist()))

    def time_s(self, stream: Hashable) -> float:
        """Stream time covered by the stream's frames so far."""
        return self._bank.time_s(self._slot(stream))

    def n_classifications(self, stream: Hashable) -> int:
        """Windows of the stream classified since it was added (or reset)."""
        return int(self._bank.rule.n_classifications[self._slot(stream)])

    # -- audio -----------------------------------------------------------------------------------------------
    def feed(self, chunks: Mapping[Hashable, np.ndarray | torch.Tensor]) -> dict[Hashable, list[Detection]]:
        """Add a chunk (any length; mono int16 or float32 in [-1, 1]) to each given stream.

        Returns {stream: [Detection, ...]} for the streams that detected something, each list in stream order.
        """
        samples = {}
        for stream, chunk in chunks.items():
            self._slot(stream)
            x = check_chunk(chunk, what=f"MultiStreamRecognizer.feed[{stream!r}]")
            if stream in self._resamplers:
                x = self._resamplers[stream].feed(x)
            if x.size:
                samples[stream] = x
        return self._feed_arrays(samples)

    def feed_many(self, audio: np.ndarray | torch.Tensor, streams: Sequence[Hashable] | None = None) -> dict[Hashable, list[Detection]]:
        """Add row i of `audio` (n_streams, n_samples; int16 or float32 in [-1, 1]) to stream `streams[i]`
        (default: every stream, in the order they were added). All these streams must be at the model's rate.

        Returns {stream: [Detection, ...]} for the streams that detected something.
        """
        if streams is None:
            if self._all is None:
                keys = list(self._slots)
                self._all = (keys, np.array([self._slots[k] for k in keys], np.int64))
            keys, slots = self._all
        else:
            keys = list(streams)
            slots = np.array([self._slot(k) for k in keys], np.int64)
            if len(set(slots.tolist())) != len(slots):
                raise ValueError("feed_many: a stream appears more than once in `streams`")
        with intra_op_threads(self._bank.threads):
            x = _as_float_block(audio, len(keys), self.model.device)
        if self._resamplers:
            resampled = [k for k in keys if k in self._resamplers]
            if resampled:
                raise ValueError(f"feed_many: streams {resampled[:3]} are not at the model's rate; use feed() for them")
        if x.shape[1] == 0 or len(keys) == 0:
            return {}
        return self._collect(self._bank.feed(slots, x))

    def flush(self, streams: Iterable[Hashable] | None = None) -> dict[Hashable, list[Detection]]:
        """End of stream for the given streams (all when None): push half a window of silence through each so
        its last word is classified. The streams stay open; `remove_stream` them when done."""
        streams = list(self._slots) if streams is None else list(dict.fromkeys(streams))
        slots = np.array([self._slot(stream) for stream in streams], np.int64)
        if len(slots) == 0:
            return {}
        heads = [self._resamplers[s].flush() if s in self._resamplers else np.zeros(0, np.float32) for s in streams]
        return self._collect(self._bank.flush(slots, heads))

    # -- internals -------------------------------------------------------------------------------------------
    def _slot(self, stream: Hashable) -> int:
        try:
            return self._slots[stream]
        except (KeyError, TypeError):
            raise ValueError(f"no stream {stream!r}; add_stream() it first (streams: {len(self._slots)})") from None

    def _feed_arrays(self, samples: dict[Hashable, np.ndarray]) -> dict[Hashable, list[Detection]]:
        if not samples:
            return {}
        lengths = np.array([len(x) for x in samples.values()], np.int64)
        block = np.zeros((len(samples), int(lengths.max())), np.float32)
        for row, x in enumerate(samples.values()):
            block[row, : len(x)] = x
        slots = np.array([self._slots[k] for k in samples], np.int64)
        return self._collect(self._bank.feed(slots, torch.from_numpy(block), lengths))

    def _collect(self, found: list[tuple[int, Detection]]) -> dict[Hashable, list[Detection]]:
        out: dict[Hashable, list[Detection]] = {}
        for slot, detection in found:
            stream = self._keys[slot]
            out.setdefault(stream, []).append(detection)
            if self.on_detection is not None:
                try:
                    self.on_detection(stream, detection)
                except Exception:
                    log.exception("on_detection callback raised for stream %r, %s; the streams go on", stream, detection)
        return out


def _as_float_block(audio: np.ndarray | torch.Tensor, n_streams: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n_streams, n_samples) int16 or float audio as a float32 tensor on `device`, checked once for the whole
    block. Off the CPU, the samples are copied as they came (int16: half the bytes) and converted and checked
    there; the check's verdict is the step's one extra device-to-host copy."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if not isinstance(audio, np.ndarray):
        raise ValueError(f"feed_many: expected a numpy array or torch tensor, got {type(audio).__name__}")
    if audio.ndim != 2 or audio.shape[0] != n_streams:
        raise ValueError(f"feed_many: expected shape ({n_streams}, n_samples) — one row per stream — got {audio.shape}")
    if audio.dtype not in (np.int16, np.float32, np.float64):
        raise ValueError(f"feed_many: unsupported sample dtype {audio.dtype}; use float32 in [-1, 1] or int16 PCM")
    device = torch.device(device)
    if audio.dtype == np.int16:
        if device.type == "cpu":
            return torch.from_numpy(audio.astype(np.float32) / 32768.0)
        return torch.from_numpy(np.ascontiguousarray(audio)).to(device).float() / 32768.0
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(device)
    # min and max see NaN and infinities too, without the temporary arrays of isfinite() and abs(): at thousands
    # of streams those checks were a third of a hop
    lo, hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    lo, hi = torch.stack([lo, hi]).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("feed_many: the block holds NaN or infinite samples; clean the signal first")
    if max(-lo, hi) > 4.0:
        raise ValueError("feed_many: float samples far beyond [-1, 1] look like integer PCM stored as float; "
                         "pass int16 or divide by 32768")
    return x
