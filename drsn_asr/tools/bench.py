"""Speed and scale benchmarks behind `drsn-asr bench`: every figure measured in one run, with its baselines.

Figures (each the median of `repeats` runs, unless it is a search; the paired run and --quick's offline run
are done once or `repeats - 1` times, as each already interleaves thousands of hops):
- single stream, CPU, 1 thread, fed one hop per chunk like a microphone (the hop the model carries, else 50 ms):
  real-time factor (processing time ÷ audio time) on a long noisy recording, per-hop latency p50/p99, peak
  memory; the same fed 30 s blocks (a file); and the real-time factor at the other common hop (50 or 100 ms);
- where a live hop's CPU time goes: the frontend (its new frames), the network, the decision rule and the rest,
  with the frontend's share and what the real-time factor would be without it (÷ the target): how much a
  costlier frontend (the speech embedding's) adds;
- baselines on the same audio in the same run: the naive path (log-mel of the whole window recomputed every
  hop), the model as a plain nn.Module instead of its folded inference form, and CMU PocketSphinx in grammar
  mode over the same words (when the `pocketsphinx` package is installed);
- offline transcription throughput (audio hours per wall-clock hour), on the CPU and on the chosen device;
- multi-stream capacity: the most concurrent real-time streams whose per-hop step has p99 latency under the
  hop, on the CPU and on the chosen device;
- training throughput (clips/s: log-mel + forward + backward + AdamW step on random 1 s clips);
- the cost a microphone's stream meets: CPU time per second of audio when 20 ms chunks arrive in real time (the
  thread asleep between them), against the same chunks back to back.
A figure that cannot be measured here (no GPU, no PocketSphinx) is reported as None with the reason.

Timings are wall-clock (`time.perf_counter`); CPU time of the measuring thread is reported beside the
headline real-time factor because on a shared machine the wall clock also counts other processes' turns.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import importlib.util
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..training import noise
from ..runtime.audio import read_audio
from ..runtime.checkpoint import LoadedModel, load_model
from ..runtime.config import to_dict
from ..runtime.decision import DecisionRule, hop_frames
from ..runtime.inference import inference_forward, onnxruntime_available
from ..runtime.model import build_net, count_parameters
from ..runtime.multistream import MultiStreamRecognizer
from ..runtime.stream import Recognizer, check_chunk, detector_config
from ..runtime.transcribe import transcribe

DEMO = "street_demo.flac"
VOCABULARY = "yes no up down left right on off stop go zero one two three four five six seven eight nine".split()
TARGET_RTF = 0.005  # issue 5: CPU, 1 thread, default model
TARGET_GPU_STREAMS = 10_000
NOISE_LEVEL = 0.5  # extra street noise, relative to the demo's RMS, so that no two repeats of the demo are alike
NOISE_BLOCK_S = 30.0


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:  # (the first processor's block; a blank line ends it)
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                cpu.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = cpu.get("flags", "").split()
    info = {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        # (a cloud host's model name can be as vague as "AMD EPYC": family and model tell its generation; two
        # 2-vCPU hosts of that name, one with AVX-512, ran the same hop graph 3-3.7x apart: performance.md)
        "cpu_family_model": f"{cpu['cpu family']}/{cpu['model']}" if "cpu family" in cpu and "model" in cpu else None,
        "cpu_avx512": "avx512f" in flags if flags else None,
        "cpu_cache": cpu.get("cache size"),
        "cpu_cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return info


def noisy_recording(duration_s: float, seed: int = 0) -> np.ndarray:
    """The bundled street demo, tiled to `duration_s`, with fresh synthesized street noise over every block."""
    import importlib.resources

    with importlib.resources.as_file(importlib.resources.files("drsn_asr") / "assets" / DEMO) as path:
        demo = read_audio(path)
    n = round(duration_s * 16000)
    x = np.resize(demo, n).astype(np.float32)
    level = NOISE_LEVEL * float(np.sqrt(np.mean(demo**2))) / noise.TARGET_RMS
    rng = np.random.default_rng(seed)
    block = round(NOISE_BLOCK_S * 16000)
    for start in range(0, n, block):
        part = min(block, n - start)
        x[start : start + part] += level * noise.street_scene(part / 16000, 16000, rng, kinds=("traffic_passby", "engine", "road_rumble", "car_horn"))
    return np.clip(x, -1.0, 1.0)


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _state_bytes(rec: Recognizer) -> int:
    """Bytes of a one-stream Recognizer's per-stream state (samples, frames, counters, decision rule)."""
    bank = rec._bank
    arrays = [bank.pending, bank.tail, bank.pending_len, bank.n_frames, *(bank.frontend_state or []),
              *vars(bank.rule).values()]
    return sum(a.nbytes for a in arrays if isinstance(a, (np.ndarray, torch.Tensor)) and len(a) == bank.capacity)


def live_stream(model: LoadedModel, audio: np.ndarray, chunk: int, **options: Any) -> dict[str, Any]:
    """Feed `audio` in `chunk`-sample pieces through a Recognizer(model, **options); wall and CPU time, per-feed
    latency."""
    rec = Recognizer(model, **options)
    latencies, detections = [], []
    wall, cpu = time.perf_counter(), time.thread_time()
    for start in range(0, len(audio), chunk):
        t = time.perf_counter()
        detections += rec.feed(audio[start : start + chunk])
        latencies.append(time.perf_counter() - t)
    detections += rec.flush()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    seconds = len(audio) / model.features.sample_rate
    return {"rtf": wall / seconds, "rtf_cpu": cpu / seconds, "latencies": latencies, "detections": detections}


def hop_parts(model: LoadedModel, audio: np.ndarray, chunk: int, **options: Any) -> dict[str, float]:
    """Where a live hop's CPU time goes: a Recognizer(model, **options) fed `audio` in `chunk`-sample pieces, with
    timers (this thread's CPU time) around its bank's new frames (the frontend: log-mel, or the speech embedding's
    streamed CNN), its network, its hop session (both in one graph, where the model has one: "graph") and its
    decision rule; µs per `chunk`, the rest being bookkeeping. The timers are set on this recognizer's own
    objects, and add a little time of their own."""
    rec = Recognizer(model, **options)
    bank = rec._bank
    spent = {"frontend": 0.0, "network": 0.0, "graph": 0.0, "rule": 0.0}

    def timed(part: str, method: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                spent[part] += time.thread_time() - t
        return run

    class TimedSession:  # a hop session, both its calls timed
        def __init__(self, session: Any):
            self.call, self.kept, self.samples = timed("graph", session), timed("graph", session.kept), session.samples

        def __call__(self, *args: Any) -> Any:
            return self.call(*args)

    bank._frames, bank._classify = timed("frontend", bank._frames), timed("network", bank._classify)
    graphs: dict[int, TimedSession] = {}
    untimed = bank._hop_graph

    def hop_graph(frames: int) -> TimedSession:  # (a whole hop's graph, or one for part of a hop)
        graph = untimed(frames)
        return graphs.setdefault(id(graph), TimedSession(graph))

    bank._hop_graph = hop_graph
    bank.rule.step = timed("rule", bank.rule.step)
    t = time.thread_time()
    for start in range(0, len(audio), chunk):
        rec.feed(audio[start : start + chunk])
    whole = time.thread_time() - t
    n_hops = len(audio) / chunk
    parts = {part: seconds / n_hops * 1e6 for part, seconds in spent.items()}
    return {"whole": whole / n_hops * 1e6, **parts, "rest": (whole - sum(spent.values())) / n_hops * 1e6}


class _NaivePath:
    """The naive baseline: every hop, the log-mel of the whole window is computed afresh from the last second
    of audio, then the same folded model and the same decision rule as the Recognizer."""

    def __init__(self, model: LoadedModel):
        c = model.features
        self.frontend = model.frontend().to(model.device)
        self.forward = inference_forward(model.net)
        self.audio = np.zeros((model.net.window_frames - 1) * c.hop_samples + c.window_samples, np.float32)
        config = detector_config(model)
        self.rule = DecisionRule(model.labels, config, 1)
        self.slot, self.now_s, self.sample_rate = np.zeros(1, np.int64), 0.0, c.sample_rate

    def feed(self, chunk: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, check_chunk(chunk)])[-len(self.audio) :]
        with torch.inference_mode():
            probs = torch.softmax(self.forward(self.frontend(torch.from_numpy(self.audio)[None])), dim=1).cpu().numpy()
        self.now_s += len(chunk) / self.sample_rate
        self.rule.step(self.slot, np.array([self.now_s]), probs)


class _PocketSphinx:
    """CMU PocketSphinx (its bundled en-us model) in grammar mode over the same words, fed int16 chunks.
    Raises ImportError when the package is missing."""

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=16000, loglevel="FATAL")
        grammar = "#JSGF V1.0;\ngrammar commands;\npublic <commands> = ( " + " | ".join(VOCABULARY) + " )* ;\n"
        self.decoder.add_jsgf_string("commands", grammar)
        self.decoder.activate_search("commands")
        self.decoder.start_utt()

    def feed(self, chunk: np.ndarray) -> None:
        self.decoder.process_raw(np.round(np.clip(chunk, -1, 1) * 32767).astype(np.int16).tobytes(), False, False)

    def close(self) -> None:
        self.decoder.end_utt()


def paired_paths(model: LoadedModel, audio: np.ndarray, chunk: int) -> dict[str, dict[str, float]]:
    """The Recognizer, the same on the torch backend, the naive path and PocketSphinx fed the same chunks in
    turn, hop by hop, so that all see the same machine conditions; wall and CPU time of each, as real-time
    factors."""
    paths: dict[str, Any] = {"incremental": Recognizer(model), "torch_backend": Recognizer(model, backend="torch"),
                             "naive": _NaivePath(model)}
    try:
        paths["pocketsphinx"] = _PocketSphinx()
    except ImportError:
        pass
    wall = dict.fromkeys(paths, 0.0)
    cpu = dict.fromkeys(paths, 0.0)
    order = list(paths)
    for hop, start in enumerate(range(0, len(audio), chunk)):
        piece = audio[start : start + chunk]
        for name in order[hop % len(order) :] + order[: hop % len(order)]:  # who goes first (coldest caches) rotates
            path = paths[name]
            w, c = time.perf_counter(), time.thread_time()
            path.feed(piece)
            cpu[name] += time.thread_time() - c
            wall[name] += time.perf_counter() - w
    if "pocketsphinx" in paths:
        paths["pocketsphinx"].close()
    seconds = len(audio) / model.features.sample_rate
    return {name: {"rtf": wall[name] / seconds, "rtf_cpu": cpu[name] / seconds} for name in paths}


def forward_speedup(model: LoadedModel, batch: int, repeats: int) -> dict[str, float]:
    """Time per window of the model as an nn.Module, folded (torch) and on ONNX Runtime (when installed), at one
    batch size."""
    x = torch.randn(batch, model.features.n_mels, model.net.window_frames, device=model.device)
    forwards = [("module", model.net), ("folded", inference_forward(model.net, "torch"))]
    if onnxruntime_available():
        onnx = inference_forward(model.net, "onnxruntime")
        forwards.append(("onnxruntime", lambda windows: onnx.probs(windows.numpy())))
    out = {}
    with torch.inference_mode():
        for name, forward in forwards:
            forward(x)
            n = max(3, 64 // batch)
            runs = []
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(n):
                    forward(x)
                runs.append((time.perf_counter() - t) / (n * batch))
            out[name] = float(np.median(runs))
    return out


def offline_throughput(model: LoadedModel, audio: np.ndarray) -> float:
    """Audio hours transcribed per wall-clock hour by `transcribe()` (one stream, 30 s blocks)."""
    start_t = time.perf_counter()
    c = model.features
    block = 30 * c.sample_rate
    rec = Recognizer(model)
    for start in range(0, len(audio), block):
        rec.feed(audio[start : start + block])
    rec.flush()
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return (len(audio) / c.sample_rate) / (time.perf_counter() - start_t)


def _lockstep(model: LoadedModel, audio: np.ndarray, n_streams: int, n_hops: int, hop: int,
              autocast: str | None, separate: bool = False, device_rule: bool | None = None) -> tuple[list[float], float, float]:
    """Per-hop wall latencies of `n_streams` streams fed one hop each in lockstep (one feed_many per hop, or one
    Recognizer per stream when `separate`), the process CPU time per hop (all threads), and the wall time in ms of
    the hop in which the streams made their first frame."""
    if separate:
        recs = [Recognizer(model) for _ in range(n_streams)]
    else:
        multi = MultiStreamRecognizer(model, autocast=autocast, device_rule=device_rule)
        for _ in range(n_streams):
            multi.add_stream()
    chunks = np.lib.stride_tricks.sliding_window_view(audio, hop)  # chunks[i] = audio[i : i + hop], no copy
    offsets = np.arange(n_streams, dtype=np.int64) * 104_729  # every stream hears a different part
    latencies, cpu = [], 0.0
    # Warm-up: three hops (allocations, cuDNN's algorithm choice) after the streams' first frame (reported apart)
    first = first_frame_hops(model, hop)
    warm_up = first + 3
    first_ms = 0.0
    for i in range(n_hops + warm_up):
        block = chunks[(offsets + i * hop) % len(chunks)]
        t, c = time.perf_counter(), time.process_time()
        if separate:
            for rec, row in zip(recs, block):
                rec.feed(row)
        else:
            multi.feed_many(block)
        if i == first - 1:
            first_ms = (time.perf_counter() - t) * 1000
        if i >= warm_up:
            latencies.append(time.perf_counter() - t)
            cpu += time.process_time() - c
    return latencies, cpu / n_hops, first_ms


def first_frame_hops(model: LoadedModel, hop: int) -> int:
    """Hops of `hop` samples until a stream's first frame: the hop in which a streaming frontend (the speech
    embedding) runs its network over a whole window, which streams started together all do at once."""
    return -(-model.features.window_samples // hop)


def _hop_samples(model: LoadedModel, hop_ms: float | None = None) -> int:
    """`hop_ms` in samples; by default the hop a Recognizer of `model` uses (the model's own, else the default)."""
    config = detector_config(model, **({} if hop_ms is None else {"hop_ms": hop_ms}))
    return hop_frames(config, model.features.hop_ms) * model.features.hop_samples


def _largest_passing(ok: Callable[[int], bool], start: int, limit: int) -> tuple[int, bool]:
    """The largest n that `ok(n)` accepts, to within 1/8: doubling from `start`, then bisecting between the last
    success and the first failure. Returns (n, capped), capped when every doubling up to `limit` passed."""
    good, bad, n = 0, None, start
    while n <= limit:
        if not ok(n):
            bad = n
            break
        good, n = n, n * 2
    if bad is not None:
        while bad - good > max(1, good // 8):
            mid = (good + bad) // 2
            good, bad = (mid, bad) if ok(mid) else (good, mid)
    return good, bad is None


def multistream_capacity(model: LoadedModel, audio: np.ndarray, n_hops: int, max_streams: int,
                         autocast: str | None = None, progress: Callable[[str], Any] | None = None,
                         device_rule: bool | None = None) -> dict[str, Any]:
    """The most lockstep streams whose per-hop step (feed_many of one hop each) has p99 latency under the hop, once
    every stream has made its first frame: doubling, then bisecting between the last success and the first
    failure. Also the number the process's CPU time per hop would allow on these cores with nothing else running
    (from the largest batch tried), and the hop in which the streams, started together, made their first frame."""
    hop = _hop_samples(model)
    hop_s = hop / model.features.sample_rate
    tried: dict[int, dict[str, float]] = {}

    def ok(n: int) -> bool:
        latencies, cpu, first_ms = _lockstep(model, audio, n, n_hops, hop, autocast, device_rule=device_rule)
        stats = _stats(latencies)
        tried[n] = {**{k: v * 1000 for k, v in stats.items()}, "cpu_ms_per_hop": cpu * 1000, "first_frame_hop_ms": first_ms}
        if progress is not None:
            progress(f"  {n} streams: p99 {tried[n]['p99']:.1f} ms (the hop of their first frames: {first_ms:.1f} ms)")
        return stats["p99"] < hop_s

    good, capped = _largest_passing(ok, 1 if model.device.type == "cpu" else 256, max_streams)
    by_cpu = None
    if model.device.type == "cpu":  # one recognizer per core, each at 1 thread, on an otherwise idle machine
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            n = max(good, 32)  # one stream alone has no batch to share: estimate from 32 at least
            cpu = _lockstep(model, audio, n, n_hops, hop, autocast)[1]
        finally:
            torch.set_num_threads(threads)
        by_cpu = int(n * hop_s / max(cpu, 1e-9)) * (os.cpu_count() or 1)
    return {"max_streams": good, "hop_ms": hop_s * 1000, "p99_ms_at_max": tried.get(good, {}).get("p99"),
            "first_frame_hop_ms_at_max": tried.get(good, {}).get("first_frame_hop_ms"),
            "capped": capped, "by_cpu_time": by_cpu,
            "tried": {str(k): v for k, v in sorted(tried.items())}}


def batched_over_separate(model: LoadedModel, audio: np.ndarray, n_streams: int, n_hops: int) -> float:
    """CPU time per hop of `n_streams` separate Recognizers ÷ that of one MultiStreamRecognizer serving them."""
    hop = _hop_samples(model)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the engines compared, not intra-op threading of tiny batches
        separate = _lockstep(model, audio, n_streams, n_hops, hop, None, separate=True)[1]
        return separate / _lockstep(model, audio, n_streams, n_hops, hop, None)[1]
    finally:
        torch.set_num_threads(threads)


def training_throughput(model: LoadedModel, device: torch.device, batch: int, steps: int, repeats: int) -> float:
    """Clips per second of a training step (log-mel, forward, label-smoothed loss, backward, AdamW) on random
    1 s clips, with mixed precision on CUDA as `drsn-asr train` uses it."""
    c = model.features
    net = build_net(model.net.config, c, len(model.labels)).to(device).train()
    frontend = model.frontend().to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    generator = torch.Generator().manual_seed(0)
    n_samples = round(model.net.config.window_s * c.sample_rate)
    audio = (torch.randn(batch, n_samples, generator=generator) * 0.1).to(device)
    labels = torch.randint(0, len(model.labels), (batch,), generator=generator).to(device)

    def step() -> None:
        with torch.autocast(device.type, enabled=use_amp):
            loss = F.cross_entropy(net(frontend(audio)), labels, label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()
    runs = []
    for _ in range(repeats):
        if use_amp:
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        if use_amp:
            torch.cuda.synchronize(device)
        runs.append(batch * steps / (time.perf_counter() - t))
    return float(np.median(runs))


PACED_CHUNK_MS, PACED_S = 20, 20.0  # a microphone's blocks in real time: 20 s of wall time a run
CHUNKS_MS = (10, 20, 32, 100)  # microphones deliver 10-32 ms blocks (Porcupine takes 32 ms); files and servers 100 ms


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Keep one core busy with a second process (a spinning Python loop) for the block: a loaded machine."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        spinner.kill()
        spinner.wait()


def chunk_costs(model: LoadedModel, audio: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """Wall-clock real-time factor of one Recognizer fed `audio` in 10, 20, 32 and 100 ms chunks, three ways:
    "defaults" (nothing set by the caller: torch's own thread count, the Recognizer's own threads), "pinned" (the
    caller pinned torch to one thread, as the other figures do) and "torch_threads" (Recognizer(threads=None):
    inference on torch's default thread count, the behaviour before the library chose its own). Each repeat
    measures every chunk size and way in turn, so that a machine whose speed drifts over minutes (a shared host)
    shifts all of them alike instead of the ones measured last; the median of the repeats is reported."""
    default_threads = torch.get_num_threads()
    runs: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for ms in CHUNKS_MS:
            chunk = round(ms * model.features.sample_rate / 1000)
            for way in ("defaults", "pinned", "torch_threads"):
                try:
                    if way == "pinned":
                        torch.set_num_threads(1)
                    options = {"threads": None} if way == "torch_threads" else {}
                    runs.setdefault(way, {}).setdefault(str(ms), []).append(live_stream(model, audio, chunk, **options)["rtf"])
                finally:
                    torch.set_num_threads(default_threads)
    return {way: {ms: float(np.median(values)) for ms, values in by_chunk.items()} for way, by_chunk in runs.items()}


def buffering_feed_us(model: LoadedModel, audio: np.ndarray) -> float:
    """Median µs of a `Recognizer.feed` of a 10 ms float32 chunk that only buffers (no window due yet)."""
    rec = Recognizer(model)
    chunk = round(model.features.sample_rate / 100)
    times = []
    for start in range(0, len(audio) - chunk, chunk):
        piece = audio[start : start + chunk]
        if rec._due_in - rec._n_held <= chunk:  # this one completes a window: classified, not timed
            rec.feed(piece)
            continue
        t = time.perf_counter()
        rec.feed(piece)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def paced_stream(model: LoadedModel, audio: np.ndarray, chunk: int) -> dict[str, float]:
    """CPU time of a `Recognizer(model)` (library defaults) fed `audio` in `chunk`-sample pieces twice: back to back
    (the other figures' way), then as a microphone delivers them, each piece when its audio would have ended in
    real time, the thread asleep in between. Per second of audio ("tight_rtf_cpu", "paced_rtf_cpu"), and the
    median µs of a paced feed that classified a window and of one that only buffered: between two chunks the
    caches cool (on a shared host within a few ms: docs/performance.md), which the tight loop never sees."""
    seconds = len(audio) / model.features.sample_rate
    out: dict[str, float] = {}
    for paced in (False, True):
        rec = Recognizer(model)
        classifying, buffering = [], []
        start = time.perf_counter()
        for at in range(0, len(audio), chunk):
            if paced:
                time.sleep(max(0.0, start + (at + chunk) / model.features.sample_rate - time.perf_counter()))
            seen = rec.n_classifications
            t = time.thread_time()
            rec.feed(audio[at : at + chunk])
            spent = time.thread_time() - t
            (classifying if rec.n_classifications != seen else buffering).append(spent)
        way = "paced" if paced else "tight"
        out[f"{way}_rtf_cpu"] = (sum(classifying) + sum(buffering)) / seconds
        if paced:
            out["classifying_feed_us"] = float(np.median(classifying)) * 1e6 if classifying else float("nan")
            out["buffering_feed_us"] = float(np.median(buffering)) * 1e6 if buffering else float("nan")
    return out


async def _server_client(port: int, pcm: bytes, chunk_bytes: int, chunk_s: float, start_at: float
                         ) -> tuple[float, str]:
    """One real-time Wyoming client: transcribe `pcm` (16 kHz mono int16) sent in `chunk_s` pieces at the pace of
    a microphone; return the seconds from the end of its audio to its transcript, and the transcript. It reads
    while it sends, as a server may end the stream early (an `error` event, raised as ConnectionError with its code
    and text)."""
    import asyncio

    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    end_of_audio = start_at + len(pcm) / 32000  # set again once the audio starts

    async def answer() -> tuple[float, str]:
        while True:
            event = await client.read_event()
            if event is None:
                raise ConnectionError("the server closed the connection before the transcript")
            if event.type == "transcript":
                return loop.time() - end_of_audio, event.data.get("text", "")
            if event.type == "error":
                raise ConnectionError(f"the server answered ({event.data.get('code')}): {event.data.get('text')}")

    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    answered = asyncio.create_task(answer())
    try:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        t0 = loop.time()
        end_of_audio = t0 + len(pcm) / 32000
        try:
            for i, at in enumerate(range(0, len(pcm), chunk_bytes)):
                await asyncio.sleep(max(0.0, t0 + (i + 1) * chunk_s - loop.time()))  # its audio has been spoken
                if answered.done():
                    break
                chunk = pcm[at : at + chunk_bytes]
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=chunk).event())
            else:
                await client.write_event(AudioStop().event())
        except ConnectionError:  # the server ended the stream: what it said is in the input already
            pass
        return await answered
    finally:
        answered.cancel()
        with contextlib.suppress(ConnectionError):  # (a server that closed first)
            await client.disconnect()


@contextlib.contextmanager
def _serving(model_source: str, device: str, max_streams: int):
    """`drsn-asr serve` in a process of its own on a free loopback port; yields the port."""
    proc = subprocess.Popen([sys.executable, "-m", "drsn_asr.cli", "serve", "--uri", "tcp://127.0.0.1:0",
                             "--model", model_source, "--max-streams", str(max_streams), "--device", device],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"on tcp://127\.0\.0\.1:(\d+);", line)
        if not found:
            raise RuntimeError(f"drsn-asr serve did not start: {line.strip()}")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # a full pipe would block the server's log
        yield int(found.group(1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def server_capacity(model_source: str, audio: np.ndarray, seconds: float, max_clients: int,
                    progress: Callable[[str], Any] | None = None, device: str = "cpu",
                    start_clients: int = 4) -> dict[str, Any]:
    """The most concurrent real-time Wyoming clients `drsn-asr serve` (a separate process on loopback, its
    defaults, no stream limit) answers with p99 end-of-audio → transcript under 0.5 s and no client failing:
    each client streams `seconds` of its own part of `audio` in 100 ms chunks at real-time pace, the clients
    starting within one chunk of each other. Doubling from `start_clients`, then bisecting; each try with a server
    of its own, since a server that fell behind admits fewer streams for a while after. A client the server ended
    because it fell behind (an `overloaded` error) counts as failing. The server's model runs on `device`; the
    clients are one asyncio loop of this process, so past a few thousand clients they, not the server, may be what
    falls behind."""
    import asyncio

    n_samples = int(seconds * 16000)
    pcm_all = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    tried: dict[int, dict[str, Any]] = {}

    def ok(n: int) -> bool:
        async def run(port: int) -> list[Any]:
            loop = asyncio.get_running_loop()
            start = loop.time() + 0.5
            tasks = []
            for i in range(n):
                at = (i * 104_729) % max(1, len(pcm_all) - n_samples)
                pcm = pcm_all[at : at + n_samples].tobytes()
                tasks.append(_server_client(port, pcm, 3200, 0.1, start + 0.1 * i / n))
            return await asyncio.gather(*tasks, return_exceptions=True)

        with _serving(model_source, device, max_clients * 2) as port:
            results = asyncio.run(run(port))
        latencies = [r[0] for r in results if isinstance(r, tuple)]
        failed = len(results) - len(latencies)
        overloaded = sum("(overloaded)" in str(r) for r in results if not isinstance(r, tuple))
        p99 = float(np.percentile(latencies, 99)) if latencies else float("inf")
        tried[n] = {"p99_s": p99, "p50_s": float(np.median(latencies)) if latencies else None, "failed": failed,
                    "overloaded": overloaded}
        if progress is not None:
            progress(f"  {n} clients: p99 {p99:.3f} s, {failed} failed ({overloaded} told the server was overloaded)")
        return failed == 0 and p99 < 0.5

    good, capped = _largest_passing(ok, start_clients, max_clients)
    return {"max_clients": good, "capped": capped, "seconds_per_client": seconds,
            "tried": {str(k): v for k, v in sorted(tried.items())}}


def _figure(value: float | None, unit: str, note: str = "", **extra: Any) -> dict[str, Any]:
    return {"value": None if value is None else float(value), "unit": unit, "note": note, **extra}


def run_benchmarks(device: str | None = "cpu", quick: bool = False, model: str | LoadedModel | None = None,
                   audio_s: float | None = None, repeats: int | None = None,
                   progress: Callable[[str], Any] | None = None, gpu_only: bool = False) -> dict[str, Any]:
    """Measure every figure of the module docstring; return them with their baselines and ratios (JSON-able).

    `gpu_only` measures the GPU figures and the CPU figures they are divided by (offline transcription on all
    threads, training throughput), and skips the single-stream and multi-stream CPU sections: for a short
    lease on a GPU machine.
    """
    say = progress or (lambda message: None)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if gpu_only and dev.type != "cuda":
        raise ValueError("--gpu-only measures GPU figures: add --device cuda on a machine with a CUDA GPU, or drop "
                         "--gpu-only for the CPU figures")
    repeats = repeats or (2 if quick else 3)
    audio_s = audio_s or (60.0 if quick else 600.0)
    default_threads = torch.get_num_threads()
    cpu_model = load_model(model, device="cpu")
    say(f"building a {audio_s:.0f} s noisy recording")
    audio = noisy_recording(audio_s)
    hop_ms = detector_config(cpu_model).hop_ms
    hop = _hop_samples(cpu_model)
    frame_ms = cpu_model.features.hop_ms  # the cost of the other common operating point (a whole number of frames)
    other_hop_ms = next(h for h in (50.0, 100.0, 80.0, 160.0, 2 * hop_ms)
                        if h != hop_ms and h >= frame_ms and abs(h / frame_ms - round(h / frame_ms)) < 1e-9)
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(dev),
        "model": {"source": cpu_model.source, "architecture": to_dict(cpu_model.net.config),
                  "parameters": count_parameters(cpu_model.net),
                  "note": str(cpu_model.training.get("note", ""))},
        "audio": {"seconds": audio_s, "source": f"{DEMO} tiled, plus synthesized street noise"},
        "settings": {"quick": quick, "gpu_only": gpu_only, "repeats": repeats, "hop_ms": hop_ms,
                     "other_hop_ms": other_hop_ms, "chunk_samples": hop,
                     "backend": type(Recognizer(cpu_model)._bank.forward).__name__},
        "figures": {},
        "ratios": {},
    }
    fig, ratio = result["figures"], result["ratios"]
    if not gpu_only:
        try:
            torch.set_num_threads(1)
            say(f"single stream, CPU, 1 thread, {hop_ms:g} ms chunks")
            live = [live_stream(cpu_model, audio, hop) for _ in range(repeats)]
            rtf = float(np.median([r["rtf"] for r in live]))
            latency = _stats([t for r in live for t in r["latencies"]])
            fig["rtf_live_cpu1"] = _figure(rtf, "", f"Recognizer fed {hop_ms:g} ms chunks; wall clock", repeats=[r["rtf"] for r in live])
            fig["rtf_live_cpu1_cpu_time"] = _figure(np.median([r["rtf_cpu"] for r in live]), "", "same runs, CPU time of the thread")
            fig["hop_latency_p50_ms"] = _figure(latency["p50"] * 1000, "ms", f"one {hop_ms:g} ms chunk in, its hop classified")
            fig["hop_latency_p99_ms"] = _figure(latency["p99"] * 1000, "ms")
            fig["peak_rss_mb"] = _figure(_peak_rss_mb(), "MB", "whole process (torch included) after the single-stream runs")
            fig["state_kb_per_stream"] = _figure(_state_bytes(Recognizer(cpu_model)) / 1024, "KiB", "a stream's own state")
            say(f"where a {hop_ms:g} ms hop goes, CPU 1 thread")
            parts = [hop_parts(cpu_model, audio[: 60 * cpu_model.features.sample_rate], hop) for _ in range(repeats)]
            for part, what in (("whole", "a whole hop"),
                               ("frontend", "its new frames (the frontend) in calls of their own"),
                               ("network", "the network in calls of its own"),
                               ("graph", "the frontend and the network in one graph (embedding.HopSession)"),
                               ("rule", "the decision rule"), ("rest", "the rest (bookkeeping)")):
                fig[f"hop_{part}_us"] = _figure(np.median([p[part] for p in parts]), "µs", f"{what}, CPU time, 60 s fed "
                                                f"{hop_ms:g} ms chunks, timers around each part")
            say("single stream, CPU, 1 thread, 30 s blocks")
            block = [live_stream(cpu_model, audio, 30 * 16000) for _ in range(repeats)]
            fig["rtf_file_cpu1"] = _figure(np.median([r["rtf"] for r in block]), "", "Recognizer fed 30 s blocks (transcribe's way)")
            result["checks"] = {"streaming_equals_offline": live[0]["detections"] == block[0]["detections"],
                                "n_detections": len(live[0]["detections"])}
            say("paired: Recognizer, naive path and PocketSphinx, hop by hop in turn")
            paired = [paired_paths(cpu_model, audio, hop) for _ in range(1 if quick else max(1, repeats - 1))]

            def median(name: str, key: str) -> float:
                return float(np.median([p[name][key] for p in paired]))

            fig["rtf_paired_incremental"] = _figure(median("incremental", "rtf"), "", "Recognizer, in the paired run")
            fig["rtf_naive_cpu1"] = _figure(median("naive", "rtf"), "", "whole-window log-mel every hop, same model and rule")
            ratio["naive_over_incremental"] = median("naive", "rtf_cpu") / median("incremental", "rtf_cpu")
            fig["rtf_torch_backend_cpu1"] = _figure(median("torch_backend", "rtf"), "", "Recognizer(backend='torch'), paired run")
            ratio["torch_backend_over_default"] = median("torch_backend", "rtf_cpu") / median("incremental", "rtf_cpu")
            if "pocketsphinx" in paired[0]:
                fig["rtf_pocketsphinx"] = _figure(median("pocketsphinx", "rtf"), "", "en-us model, JSGF grammar of the 20 words")
                ratio["pocketsphinx_over_drsn"] = median("pocketsphinx", "rtf_cpu") / median("incremental", "rtf_cpu")
            else:
                fig["rtf_pocketsphinx"] = _figure(None, "", "skipped: pip install pocketsphinx (or drsn-asr[bench])")
            say("model forward: nn.Module vs folded vs ONNX Runtime")
            for batch in (1, 64):
                times = forward_speedup(cpu_model, batch, repeats)
                fig[f"forward_module_b{batch}_us"] = _figure(times["module"] * 1e6, "µs/window", f"nn.Module, batch {batch}")
                fig[f"forward_folded_b{batch}_us"] = _figure(times["folded"] * 1e6, "µs/window", f"FoldedNet, batch {batch}")
                ratio[f"forward_module_over_folded_b{batch}"] = times["module"] / times["folded"]
                if "onnxruntime" in times:
                    fig[f"forward_onnx_b{batch}_us"] = _figure(times["onnxruntime"] * 1e6, "µs/window", f"OnnxNet, batch {batch}")
                    ratio[f"forward_folded_over_onnx_b{batch}"] = times["folded"] / times["onnxruntime"]
            # The frontend's time: its calls of their own, plus what the hop graph costs beyond the network alone
            # (the network's batch-1 time on ONNX Runtime, just measured); then what the model would cost if its
            # frontend were free, i.e. how far the frontend alone keeps it from the target.
            graph_us = fig["hop_graph_us"]["value"]
            network_b1_us = fig["forward_onnx_b1_us"]["value"] if "forward_onnx_b1_us" in fig else 0.0
            frontend_us = fig["hop_frontend_us"]["value"] + max(graph_us - network_b1_us, 0.0)
            ratio["frontend_share_of_hop"] = frontend_us / fig["hop_whole_us"]["value"]
            ratio["rtf_without_frontend_over_target"] = (fig["hop_whole_us"]["value"] - frontend_us) \
                / (hop_ms * 1000) / TARGET_RTF
            say(f"single stream, CPU, 1 thread, {other_hop_ms:g} ms hop")
            other_hop = _hop_samples(cpu_model, other_hop_ms)
            other = [live_stream(cpu_model, audio, other_hop, hop_ms=other_hop_ms) for _ in range(repeats)]
            fig["rtf_live_cpu1_other_hop"] = _figure(np.median([r["rtf_cpu"] for r in other]), "",
                                                     f"Recognizer(hop_ms={other_hop_ms:g}) fed {other_hop_ms:g} ms chunks; "
                                                     "CPU time")
            ratio["rtf_over_target"] = rtf / TARGET_RTF
        finally:
            torch.set_num_threads(default_threads)

    if not gpu_only:
        short = audio[: int((6.0 if quick else 60.0) * cpu_model.features.sample_rate)]
        for load in ("idle", "loaded"):
            say(f"chunk sizes {', '.join(map(str, CHUNKS_MS))} ms, the caller's threads and pinned, {load} machine")
            with busy_core() if load == "loaded" else contextlib.nullcontext():
                costs = chunk_costs(cpu_model, short, 1 if quick else repeats)
            for way, by_chunk in costs.items():
                for ms, value in by_chunk.items():
                    fig[f"rtf_chunk{ms}_{way}_{load}"] = _figure(value, "", f"{ms} ms chunks, {way}, {load} machine")
            for ms in CHUNKS_MS:
                ratio[f"defaults_over_pinned_chunk{ms}_{load}"] = costs["defaults"][str(ms)] / costs["pinned"][str(ms)]
            ratio[f"chunk20_over_chunk100_{load}"] = costs["defaults"]["20"] / costs["defaults"]["100"]
            ratio[f"torch_threads_over_defaults_chunk20_{load}"] = costs["torch_threads"]["20"] / costs["defaults"]["20"]
        ratio["rtf_chunk20_loaded_over_target"] = fig["rtf_chunk20_defaults_loaded"]["value"] / TARGET_RTF
        fig["feed_buffering_us"] = _figure(buffering_feed_us(cpu_model, short), "µs",
                                           "Recognizer.feed of 10 ms that only buffers (median)")
        paced_s = 3.0 if quick else PACED_S
        say(f"{PACED_CHUNK_MS} ms chunks in real time, {paced_s:g} s of audio, library defaults, idle machine")
        paced = [paced_stream(cpu_model, short[: int(paced_s * cpu_model.features.sample_rate)],
                              round(PACED_CHUNK_MS * cpu_model.features.sample_rate / 1000)) for _ in range(1 if quick else 2)]
        for key, unit, what in (("paced_rtf_cpu", "", "CPU time ÷ audio time, chunks arriving in real time"),
                                ("tight_rtf_cpu", "", "the same chunks back to back (same run)"),
                                ("classifying_feed_us", "µs", "a paced feed that classified a window (median)"),
                                ("buffering_feed_us", "µs", "a paced feed that only buffered (median)")):
            fig[f"chunk{PACED_CHUNK_MS}_{key}"] = _figure(np.median([p[key] for p in paced]), unit,
                                                         f"{what}; {PACED_CHUNK_MS} ms chunks, library defaults, idle")
        ratio[f"paced_over_tight_chunk{PACED_CHUNK_MS}"] = (fig[f"chunk{PACED_CHUNK_MS}_paced_rtf_cpu"]["value"]
                                                          / fig[f"chunk{PACED_CHUNK_MS}_tight_rtf_cpu"]["value"])

    say(f"offline transcription, CPU, {default_threads} threads")
    if not gpu_only:
        fig["offline_cpu1_audio_h_per_h"] = _figure(1 / fig["rtf_file_cpu1"]["value"], "audio h/h",
                                                    "1 thread (the 30 s block runs)")
    fig["offline_cpu_audio_h_per_h"] = _figure(np.median([offline_throughput(cpu_model, audio) for _ in range(1 if quick else repeats)]),
                                               "audio h/h", f"{default_threads} threads")
    gpu_model = None
    if dev.type == "cuda":  # a LoadedModel passed in is moved by load_model: keep the CPU one where it is
        gpu_model = load_model(copy.deepcopy(model) if isinstance(model, LoadedModel) else model, device=dev)
    if gpu_model is not None:
        say("offline transcription, GPU")
        fig["offline_gpu_audio_h_per_h"] = _figure(np.median([offline_throughput(gpu_model, audio) for _ in range(repeats)]), "audio h/h")
        ratio["offline_gpu_over_cpu"] = fig["offline_gpu_audio_h_per_h"]["value"] / fig["offline_cpu_audio_h_per_h"]["value"]
    else:
        fig["offline_gpu_audio_h_per_h"] = _figure(None, "audio h/h", "pending: run with --device cuda on a GPU")

    n_hops = 8 if quick else 20
    if not gpu_only:
        say("multi-stream capacity, CPU, 1 thread")
        try:  # intra-op threads only slow small batches down: one recognizer per core is the way to use more cores
            torch.set_num_threads(1)
            cpu_cap = multistream_capacity(cpu_model, audio, n_hops, 512 if quick else 4096, progress=say)
        finally:
            torch.set_num_threads(default_threads)
        fig["streams_cpu"] = _figure(cpu_cap["max_streams"], "streams", f"1 thread; p99 hop latency < {hop_ms:g} ms",
                                     search=cpu_cap)
        fig["streams_cpu_by_cpu_time"] = _figure(cpu_cap["by_cpu_time"], "streams", "CPU time per hop at 1 thread × "
                                                 "cores: one recognizer per core, idle machine")
        say("multi-stream vs separate Recognizers, CPU 1 thread, 32 streams")
        ratio["multistream_over_separate_cpu"] = batched_over_separate(cpu_model, audio, 32, n_hops)
        if importlib.util.find_spec("wyoming") is None:
            fig["server_clients_cpu"] = _figure(None, "clients", "skipped: pip install 'drsn-asr[server]'")
        elif isinstance(model, LoadedModel):
            fig["server_clients_cpu"] = _figure(None, "clients", "skipped: the server loads a model by name or path")
        else:
            say("server capacity: real-time Wyoming clients on loopback")
            served = server_capacity(cpu_model.source, audio, 3.0 if quick else 10.0, 16 if quick else 1024,
                                     progress=say)
            fig["server_clients_cpu"] = _figure(served["max_clients"], "clients",
                                                "drsn-asr serve, its defaults; p99 end-of-audio → transcript < 0.5 s",
                                                search=served)
            if cpu_cap["max_streams"]:
                ratio["server_clients_over_streams_cpu"] = served["max_clients"] / cpu_cap["max_streams"]
    if gpu_model is not None:
        # the decision rule on the device (the default) and, as the baseline of the same run, on the host
        for name, precision, device_rule in (("float32", None, None), ("float16", "float16", None),
                                             ("float32_host_rule", None, False)):
            say(f"multi-stream capacity, GPU, {name}")
            cap = multistream_capacity(gpu_model, audio, n_hops, 1 << 17, autocast=precision, progress=say,
                                       device_rule=device_rule)
            fig[f"streams_gpu_{name}"] = _figure(cap["max_streams"], "streams", f"p99 hop latency < {hop_ms:g} ms", search=cap)
        best = max(fig["streams_gpu_float32"]["value"], fig["streams_gpu_float16"]["value"])
        ratio["gpu_streams_over_target"] = best / TARGET_GPU_STREAMS
        ratio["gpu_streams_device_rule_over_host_rule"] = (fig["streams_gpu_float32"]["value"]
                                                           / max(fig["streams_gpu_float32_host_rule"]["value"], 1))
        if importlib.util.find_spec("wyoming") is not None and not isinstance(model, LoadedModel):
            say("server capacity on the GPU: real-time Wyoming clients on loopback")
            served = server_capacity(cpu_model.source, audio, 10.0, 8192, progress=say, device="cuda", start_clients=64)
            fig["server_clients_gpu"] = _figure(served["max_clients"], "clients", "drsn-asr serve --device cuda "
                                                "--max-streams above the search; p99 end-of-audio → transcript < 0.5 s",
                                                search=served)
            ratio["server_clients_over_streams_gpu"] = served["max_clients"] / max(fig["streams_gpu_float32"]["value"], 1)
    else:
        fig["streams_gpu_float32"] = _figure(None, "streams", "pending: run with --device cuda on a GPU")

    say("training throughput")
    fig["train_cpu_clips_per_s"] = _figure(training_throughput(cpu_model, torch.device("cpu"), 32 if quick else 128, 1 if quick else 2, repeats),
                                           "clips/s", f"batch {32 if quick else 128}, {default_threads} threads")
    if gpu_model is not None:
        fig["train_gpu_clips_per_s"] = _figure(training_throughput(gpu_model, dev, 256, 10, repeats), "clips/s", "batch 256, AMP")
        ratio["train_gpu_over_cpu"] = fig["train_gpu_clips_per_s"]["value"] / fig["train_cpu_clips_per_s"]["value"]
    else:
        fig["train_gpu_clips_per_s"] = _figure(None, "clips/s", "pending: run with --device cuda on a GPU")
    result["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return result


ROWS = [  # (figure, label, format)
    ("rtf_live_cpu1", "Real-time factor, 1 stream, CPU 1 thread, {hop} ms chunks", "{:.4f}"),
    ("rtf_live_cpu1_cpu_time", "  same, CPU time instead of wall clock", "{:.4f}"),
    ("rtf_file_cpu1", "Real-time factor, 1 stream, CPU 1 thread, 30 s blocks", "{:.4f}"),
    ("hop_latency_p50_ms", "Hop latency p50 (ms)", "{:.2f}"),
    ("hop_latency_p99_ms", "Hop latency p99 (ms)", "{:.2f}"),
    ("hop_whole_us", "A {hop} ms hop, CPU time (µs; timers on)", "{:.0f}"),
    ("hop_frontend_us", "  its new frames: the frontend (µs)", "{:.0f}"),
    ("hop_network_us", "  the network (µs)", "{:.0f}"),
    ("hop_graph_us", "  frontend and network in one graph (µs)", "{:.0f}"),
    ("hop_rule_us", "  the decision rule (µs)", "{:.0f}"),
    ("hop_rest_us", "  the rest: bookkeeping (µs)", "{:.0f}"),
    ("peak_rss_mb", "Peak memory, whole process (MB)", "{:.0f}"),
    ("state_kb_per_stream", "State per stream (KiB)", "{:.1f}"),
    ("rtf_paired_incremental", "Paired run: Recognizer, RTF", "{:.4f}"),
    ("rtf_naive_cpu1", "Paired run: naive path (window log-mel every hop), RTF", "{:.4f}"),
    ("rtf_pocketsphinx", "Paired run: PocketSphinx grammar mode, RTF", "{:.4f}"),
    ("forward_module_b1_us", "Baseline: model as nn.Module, batch 1 (µs/window)", "{:.0f}"),
    ("forward_folded_b1_us", "Model folded for inference, batch 1 (µs/window)", "{:.0f}"),
    ("forward_module_b64_us", "Baseline: model as nn.Module, batch 64 (µs/window)", "{:.0f}"),
    ("forward_folded_b64_us", "Model folded for inference, batch 64 (µs/window)", "{:.0f}"),
    ("forward_onnx_b1_us", "Model on ONNX Runtime, batch 1 (µs/window)", "{:.0f}"),
    ("forward_onnx_b64_us", "Model on ONNX Runtime, batch 64 (µs/window)", "{:.0f}"),
    ("rtf_torch_backend_cpu1", "Paired run: Recognizer on the torch backend, RTF", "{:.4f}"),
    ("rtf_live_cpu1_other_hop", "Real-time factor at a {other_hop} ms hop, CPU time", "{:.4f}"),
    ("offline_cpu1_audio_h_per_h", "Offline transcription, CPU 1 thread (audio h per h)", "{:.0f}"),
    ("offline_cpu_audio_h_per_h", "Offline transcription, CPU all threads (audio h per h)", "{:.0f}"),
    ("offline_gpu_audio_h_per_h", "Offline transcription, GPU (audio h per h)", "{:.0f}"),
    ("streams_cpu", "Concurrent real-time streams, CPU 1 thread (p99 hop < {hop} ms)", "{:.0f}"),
    ("streams_cpu_by_cpu_time", "  same, from CPU time (1 recognizer per core, idle machine)", "{:.0f}"),
    ("streams_gpu_float32", "Concurrent real-time streams, GPU float32", "{:.0f}"),
    ("streams_gpu_float16", "Concurrent real-time streams, GPU float16", "{:.0f}"),
    ("streams_gpu_float32_host_rule", "  same, float32, decision rule on the host (baseline)", "{:.0f}"),
    *[(f"rtf_chunk{ms}_{way}_{load}", f"RTF, {ms} ms chunks, {label}, {load} machine", "{:.4f}")
      for load in ("idle", "loaded") for way, label in (("defaults", "library defaults"), ("pinned", "1 pinned thread"),
                                                        ("torch_threads", "threads=None (torch's)"))
      for ms in CHUNKS_MS],
    ("feed_buffering_us", "feed() of 10 ms with no window due (µs)", "{:.1f}"),
    (f"chunk{PACED_CHUNK_MS}_paced_rtf_cpu", f"CPU ÷ audio time, {PACED_CHUNK_MS} ms chunks in real time, idle", "{:.4f}"),
    (f"chunk{PACED_CHUNK_MS}_tight_rtf_cpu", "  same chunks back to back (baseline)", "{:.4f}"),
    (f"chunk{PACED_CHUNK_MS}_classifying_feed_us", "  a paced feed that classified a window (µs)", "{:.0f}"),
    (f"chunk{PACED_CHUNK_MS}_buffering_feed_us", "  a paced feed that only buffered (µs)", "{:.0f}"),
    ("server_clients_cpu", "Real-time Wyoming clients, drsn-asr serve (p99 < 0.5 s)", "{:.0f}"),
    ("server_clients_gpu", "Real-time Wyoming clients, drsn-asr serve --device cuda (p99 < 0.5 s)", "{:.0f}"),
    ("train_cpu_clips_per_s", "Training throughput, CPU (clips/s)", "{:.0f}"),
    ("train_gpu_clips_per_s", "Training throughput, GPU (clips/s)", "{:.0f}"),
]


def format_report(result: dict[str, Any]) -> str:
    """The result as a plain-text table, with the machine and the ratios to the baselines."""
    m = result["machine"]
    lines = [
        f"drsn-asr bench — {result['date']}",
        f"machine: {m['cpu']}{' family/model ' + m['cpu_family_model'] if m.get('cpu_family_model') else ''} "
        f"({m['cpu_cores']} cores, {m['cpu_capability']}), torch {m['torch']}, "
        f"{m['torch_threads']} threads, device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}, "
        f"load average {m['load_average_1min']} → {m.get('load_average_1min_end')}",
        f"model: {result['model']['source']} ({result['model']['parameters']:,} parameters); audio: "
        f"{result['audio']['seconds']:.0f} s; median of {result['settings']['repeats']} runs",
        "",
    ]
    hops = {"hop": f"{result['settings']['hop_ms']:g}", "other_hop": f"{result['settings'].get('other_hop_ms', 0):g}"}
    rows = [(key, label.format(**hops), fmt) for key, label, fmt in ROWS]
    width = max(len(label) for _, label, _ in rows)
    for key, label, fmt in rows:
        f = result["figures"].get(key)
        if f is None:
            continue
        value = fmt.format(f["value"]) if f["value"] is not None else "—"
        lines.append(f"{label:<{width}}  {value:>10}  {f['note'] if f['value'] is None else ''}".rstrip())
    lines.append("")
    names = {
        "rtf_over_target": f"RTF ÷ target {TARGET_RTF}",
        "frontend_share_of_hop": "frontend ÷ whole hop (CPU time)",
        "rtf_without_frontend_over_target": f"RTF without the frontend's time ÷ target {TARGET_RTF}",
        "naive_over_incremental": "naive ÷ incremental (paired, CPU time)",
        "pocketsphinx_over_drsn": "PocketSphinx ÷ drsn-asr (paired, CPU time)",
        "forward_module_over_folded_b1": "nn.Module ÷ folded, batch 1",
        "forward_module_over_folded_b64": "nn.Module ÷ folded, batch 64",
        "forward_folded_over_onnx_b1": "folded ÷ ONNX Runtime, batch 1",
        "forward_folded_over_onnx_b64": "folded ÷ ONNX Runtime, batch 64",
        "torch_backend_over_default": "torch backend ÷ default backend (paired, CPU time)",
        "gpu_streams_over_target": f"GPU streams ÷ target {TARGET_GPU_STREAMS:,}",
        "multistream_over_separate_cpu": "32 Recognizers ÷ 1 MultiStream of 32 (CPU, 1 thread)",
        "offline_gpu_over_cpu": "offline transcription, GPU ÷ CPU all threads",
        "train_gpu_over_cpu": "training throughput, GPU (AMP) ÷ CPU",
        "gpu_streams_device_rule_over_host_rule": "GPU streams, decision rule on the device ÷ on the host",
        "server_clients_over_streams_cpu": "server clients ÷ in-process streams (CPU, 1 thread)",
        "server_clients_over_streams_gpu": "server clients ÷ in-process streams (GPU, float32)",
        "rtf_chunk20_loaded_over_target": f"RTF at 20 ms chunks, defaults, loaded ÷ target {TARGET_RTF}",
        **{f"defaults_over_pinned_chunk{ms}_{load}": f"defaults ÷ pinned, {ms} ms chunks, {load}"
           for ms in CHUNKS_MS for load in ("idle", "loaded")},
        **{f"chunk20_over_chunk100_{load}": f"20 ms ÷ 100 ms chunks, defaults, {load}" for load in ("idle", "loaded")},
        f"paced_over_tight_chunk{PACED_CHUNK_MS}": f"{PACED_CHUNK_MS} ms chunks in real time ÷ back to back (CPU time)",
        **{f"torch_threads_over_defaults_chunk20_{load}": f"threads=None ÷ defaults, 20 ms chunks, {load}"
           for load in ("idle", "loaded")},
    }
    for key, value in result["ratios"].items():
        lines.append(f"{names.get(key, key):<{width}}  {value:>10.2f}")
    checks = result.get("checks", {})
    if checks:
        lines.append(f"streaming ({hops['hop']} ms chunks) == offline (30 s blocks): {checks['streaming_equals_offline']} "
                     f"({checks['n_detections']} detections)")
    return "\n".join(lines) + "\n"
