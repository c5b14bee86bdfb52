"""What the model saw and did over a recording: log-mel, posteriors, and each shrinkage unit's thresholds.

`explain()` replays a recording through the classifier at the streaming Recognizer's window and hop, and
records per window: the posteriors, and for every shrinkage unit (DRSN-CW / DRSN-CS) the learned thresholds
τ and the fraction of the residual's activations that soft thresholding set exactly to zero. τ and the
zeroed fraction are read with forward hooks on the model's `Threshold` and `Shrinkage` modules (registered
for the call and removed after it), so nothing of the model's math is repeated here.

τ is computed from the global average of |features| over the whole 1 s window, so there is one τ per window
and channel: "over time" means per sliding window (one every `hop_ms`), each value describing the second of
audio that ends at `times_s`. Plots live in `explain_plot.py`; this module needs no matplotlib.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runtime.audio import resample, stream_audio, to_float32
from ..runtime.checkpoint import LoadedModel, load_model
from ..runtime.model import KeywordNet, Shrinkage, Threshold
from ..runtime.stream import MAX_BATCH_WINDOWS, Detection, Recognizer, detector_config

DECISION_CONTEXT_S = 2.0  # detections come from a Recognizer started this long before start_s (smoothing, hold-offs)
DECISION_TAIL_S = 1.0  # ... and fed this long past end_s, so a word near the end is still decided


@dataclass(frozen=True, eq=False)
class Explanation:
    """The numbers behind an explain picture. Times are seconds from the start of the recording.

    Per window (n_windows, one every hop, each the `window_s` of audio ending at `times_s[i]`):
        times_s: (n_windows,) end time of each classification window
        scores: (n_windows, n_classes) the model's posteriors (softmax, before the Recognizer's smoothing)
    Per shrinkage unit u, in network order (empty tuples for models without shrinkage: resnet, se_resnet):
        unit_names[u]: the Shrinkage module's path in the network, e.g. "units.0.branch_end"
        tau[u]: (n_windows, n_channels) learned thresholds; DRSN-CS units share one τ: (n_windows, 1)
        tau_mean[u]: (n_windows,) τ averaged over channels
        zero_fraction[u]: (n_windows,) share of the unit's residual activations (channels × mel × time) that
            soft thresholding set exactly to zero
    Of the span [start_s, end_s]:
        logmel: (n_mels, n_frames) log-mel frames lying wholly inside the span
        frame_times_s: (n_frames,) centre of each frame
        detections: what a Recognizer with the same options reports over the span (words overlapping it)
    """

    times_s: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]
    unit_names: tuple[str, ...]
    tau: tuple[np.ndarray, ...]
    tau_mean: tuple[np.ndarray, ...]
    zero_fraction: tuple[np.ndarray, ...]
    logmel: np.ndarray
    frame_times_s: np.ndarray
    detections: tuple[Detection, ...]
    start_s: float
    end_s: float
    window_s: float
    hop_ms: float
    threshold: float
    model: str
    block: str
    frontend: str = "logmel"  # what `logmel` holds: log-mel bands, or speech-embedding values ("speech_embedding")

    def unit_rows(self) -> list[dict[str, Any]]:
        """One dict per window, for tables: time, top label and score, then mean τ and zero fraction per unit."""
        rows = []
        top = self.scores.argmax(axis=1)
        for i, t in enumerate(self.times_s.tolist()):
            row: dict[str, Any] = {"end_s": t, "top": self.labels[top[i]], "score": float(self.scores[i, top[i]])}
            for name, m, z in zip(self.unit_names, self.tau_mean, self.zero_fraction):
                row[f"{name} mean τ"] = float(m[i])
                row[f"{name} zeroed"] = float(z[i])
            rows.append(row)
        return rows


@contextlib.contextmanager
def capture_shrinkage(net: torch.nn.Module) -> Iterator[dict[str, dict[str, list[torch.Tensor]]]]:
    """Record every Shrinkage unit's τ and zeroed fraction during the forward passes inside the block.

    Yields {unit path: {"tau": [(B, C) per call], "zero_fraction": [(B,) per call]}}; the hooks are removed
    on exit, even after an error. Models without Shrinkage modules yield an empty dict.
    """
    traces: dict[str, dict[str, list[torch.Tensor]]] = {}
    handles = []

    try:
        for name, module in net.named_modules():
            if isinstance(module, Shrinkage):
                trace = traces[name] = {"tau": [], "zero_fraction": []}
                threshold = next(m for m in module.modules() if isinstance(m, Threshold))
                handles.append(threshold.register_forward_hook(partial(_keep_tau, trace["tau"])))
                handles.append(module.register_forward_hook(partial(_keep_zero_fraction, trace["zero_fraction"])))
        yield traces
    finally:
        for handle in handles:
            handle.remove()


def _keep_tau(store: list[torch.Tensor], module: torch.nn.Module, inputs: Any, tau: torch.Tensor) -> None:
    store.append(tau.detach().flatten(1).float().cpu())  # (B, C, 1, 1) or (B, 1, 1, 1) → (B, C) or (B, 1)


def _keep_zero_fraction(store: list[torch.Tensor], module: torch.nn.Module, inputs: Any, y: torch.Tensor) -> None:
    store.append((y.detach() == 0).flatten(1).float().mean(dim=1).cpu())  # y: the soft-thresholded residual


def _read_span(path: Path, sample_rate: int, end_sample: int | None) -> np.ndarray:
    """A file's audio at `sample_rate` from its start up to `end_sample` (all of it for None), read in blocks."""
    blocks, n = [], 0
    for block in stream_audio(path, sample_rate=sample_rate):
        blocks.append(block)
        n += len(block)
        if end_sample is not None and n >= end_sample:
            break
    return np.concatenate(blocks)[:end_sample] if blocks else np.zeros(0, np.float32)


def explain(
    audio_or_path: str | os.PathLike | np.ndarray | torch.Tensor,
    model: str | os.PathLike | LoadedModel | None = None,
    sample_rate: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    hop_ms: float | None = None,
    device: str | torch.device | None = None,
    **detector_options: Any,
) -> Explanation:
    """Posteriors and shrinkage thresholds of every classification window ending in [start_s, end_s].

    Args:
        audio_or_path: a wav/flac/ogg file (any rate and channel count) or a mono array (int16, or float32 in
            [-1, 1]) at `sample_rate` (default: the model's rate).
        model: shipped model name, checkpoint path, LoadedModel, or None for the default model.
        start_s, end_s: the span to explain, in seconds from the start (default: the whole recording).
        hop_ms: one window every hop_ms (default: the Recognizer's, 50 ms); **detector_options: the other
            DetectorConfig fields, for the detections.
    Windows are exactly those the streaming Recognizer classifies while reading the recording from its start
    (same grid, silence before the first sample), so `scores` are the posteriors it smooths. Raises
    ValueError for an empty span or one shorter than a hop.
    """
    loaded = load_model(model, device=device)
    net = loaded.net
    c = loaded.features
    rate = c.sample_rate
    config = detector_config(loaded, **({} if hop_ms is None else {"hop_ms": hop_ms}), **detector_options)
    if (start_s or 0.0) < 0 or end_s is not None and end_s <= (start_s or 0.0):
        raise ValueError(f"need 0 <= start_s < end_s, got start_s={start_s}, end_s={end_s}")
    if isinstance(audio_or_path, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError("sample_rate is for arrays; a file's rate is read from its header")
        # read past the Recognizer's tail, so that it is flushed only where the recording really ends
        audio = _read_span(Path(audio_or_path), rate, None if end_s is None else round((end_s + 2 * DECISION_TAIL_S) * rate))
    else:
        audio = to_float32(audio_or_path, what="explain")
        if sample_rate is not None and sample_rate != rate:
            audio = resample(audio, sample_rate, rate)
    hop, W, T = c.hop_samples, c.window_samples, net.window_frames
    h = max(1, round(config.hop_ms / c.hop_ms))  # frames per hop, as in stream.StreamBank
    start_sample = 0 if start_s is None else round(start_s * rate)
    end_sample = len(audio) if end_s is None else min(len(audio), round(end_s * rate))
    # window i of the stream ends with frame k = (i+1)*h - 1, i.e. at sample k*hop + W
    k_first = max(h - 1, -(-(start_sample - W) // hop))
    k_first += (h - 1 - k_first) % h
    k_last = (end_sample - W) // hop if end_sample >= W else -1
    k_last -= (k_last + 1) % h
    if k_last < k_first:
        raise ValueError(
            f"the span {start_sample / rate:.3f}–{end_sample / rate:.3f} s of a {len(audio) / rate:.3f} s recording "
            f"holds no classification window (one ends every {config.hop_ms:g} ms); widen the span"
        )
    span_first, span_last = -(-start_sample // hop), (end_sample - W) // hop  # frames wholly inside the span
    f0 = k_first - T + 1  # first frame of the first window (negative: the Recognizer's silence before the start)
    g0, g1 = max(0, min(f0, span_first)), max(k_last, span_last)
    frontend = loaded.frontend().to(loaded.device)
    with torch.inference_mode():
        frames = frontend(torch.from_numpy(np.ascontiguousarray(audio[g0 * hop : g1 * hop + W])).to(loaded.device))
        lead = torch.as_tensor(frontend.silence_value, device=frames.device).expand(c.n_mels, max(0, -f0))
        history = torch.cat([lead, frames[:, max(0, f0) - g0 : k_last - g0 + 1]], dim=1)
        windows = history.unfold(1, T, h).permute(1, 0, 2)  # (n_windows, n_mels, T)
        scores, traces = _classify(net, windows)
    times_s = (np.arange(k_first, k_last + 1, h) * hop + W) / rate
    detections = _detections(audio, loaded, config, start_sample, end_sample, h * hop)
    names = tuple(traces)
    return Explanation(
        times_s=times_s,
        scores=scores,
        labels=tuple(loaded.labels),
        unit_names=names,
        tau=tuple(traces[n]["tau"] for n in names),
        tau_mean=tuple(traces[n]["tau"].mean(axis=1) for n in names),
        zero_fraction=tuple(traces[n]["zero_fraction"] for n in names),
        logmel=frames[:, span_first - g0 : span_last - g0 + 1].float().cpu().numpy(),
        frame_times_s=(np.arange(span_first, span_last + 1) * hop + W / 2) / rate,
        detections=detections,
        start_s=start_sample / rate,
        end_s=end_sample / rate,
        window_s=net.config.window_s,
        hop_ms=config.hop_ms,
        threshold=config.threshold,
        model=loaded.source,
        block=net.config.block,
        frontend=c.kind,
    )


def _classify(net: KeywordNet, windows: torch.Tensor) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Posteriors (n_windows, n_classes) through the module itself (its hooks fire), and the captured traces."""
    out = []
    with capture_shrinkage(net) as traces:
        for start in range(0, len(windows), MAX_BATCH_WINDOWS):
            out.append(torch.softmax(net(windows[start : start + MAX_BATCH_WINDOWS].contiguous()).float(), dim=1).cpu())
    arrays = {name: {k: torch.cat(v).numpy() for k, v in trace.items()} for name, trace in traces.items()}
    return torch.cat(out).numpy(), arrays


def _detections(audio: np.ndarray, model: LoadedModel, config: Any, start_sample: int, end_sample: int,
                grid: int) -> tuple[Detection, ...]:
    """The Recognizer's detections of words overlapping the span; it starts on the window grid a little before."""
    rate = model.features.sample_rate
    a = max(0, start_sample - round(DECISION_CONTEXT_S * rate)) // grid * grid  # same window grid as from sample 0
    b = min(len(audio), end_sample + round(DECISION_TAIL_S * rate))
    rec = Recognizer(model, sample_rate=rate, **{k: getattr(config, k) for k in config.__dataclass_fields__})
    found = rec.feed(audio[a:b])
    if b == len(audio):
        found += rec.flush()  # the end of the recording: as transcribe() does
    offset_s = a / rate
    shifted = (Detection(d.label, d.score, round(d.start_s + offset_s, 3), round(d.end_s + offset_s, 3)) for d in found)
    return tuple(d for d in shifted if d.end_s > start_sample / rate and d.start_s < end_sample / rate)
