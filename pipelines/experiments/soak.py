"""Soak test: hours of synthetic street audio through one Recognizer at full speed; memory and latency figures.

    python pipelines/experiments/soak.py [--minutes 180] [--chunk-ms 100] [--model M] [--threads 1] [--seed 0]
                             [--repeat-scene] [--json OUT]

The audio is made on the fly, one block at a time, and never held whole: a fresh synthesized street scene
(`drsn_asr.training.noise.street_scene`) for every 10 s, and every `--demo-every-min` minutes the bundled street demo
recording (spoken commands in street noise), so the recognizer has something to detect all along. Each block is
fed in `--chunk-ms` chunks as fast as the recognizer takes them. Printed:
- RSS (VmRSS in /proc/self/status) after loading, after the first 10 % of the run (the warm-up) and at the end,
  the growth since the warm-up, and the peak (VmHWM);
- throughput in × real time: of the recognizer alone, and with the audio synthesis;
- per-chunk latency p50/p99 over the first and the last 10 % of the chunks, as wall time and as this thread's
  CPU time (torch runs on this thread at --threads 1, and CPU time does not count time the machine spent on
  other processes, so it compares the recognizer's work early and late even on a busy machine);
- the detections in each pass of the demo (label, score, times from the pass's start): the same in every pass
  means the stream has not drifted; and the detections in the synthesized street, which holds no words.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio  # noqa: E402
from drsn_asr.training.noise import street_scene  # noqa: E402

SCENE_S = 10.0
DEMO = REPO / "drsn_asr" / "assets" / "street_demo.flac"
EDGE_FRACTION = 0.1  # "first" and "last" part of the run
DEMO_GAP_S = 2.0  # silence around each demo pass: longer than the model's window plus the refractory time


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set size (or another /proc/self/status field given in kB), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (not Linux?)")


def audio_blocks(total_samples: int, chunk: int, demo: np.ndarray, demo_every_s: float,
                 rng: np.random.Generator, fresh: bool = True, hop: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """("scene" | "demo", block) until `total_samples`: scenes (each new, or with `fresh=False` the first one
    again and again), and a whole demo pass `demo_every_s` after the start and after each pass. Every block is
    a whole number of chunks and of the recognizer's `hop` (in samples), so that every pass meets the same phase
    of the chunking and of the classification hop.

    A demo pass is the demo between DEMO_GAP_S of digital silence: the recognizer then enters every pass in the
    same state (the street before it is forgotten), so every pass must give exactly the same detections."""
    unit = math.lcm(chunk, hop)
    gap = np.zeros(round(DEMO_GAP_S * SAMPLE_RATE) // unit * unit, np.float32)
    demo = np.concatenate([gap, demo[: len(demo) // chunk * chunk], gap])
    demo = np.pad(demo, (0, -len(demo) % unit))  # same phase of the chunking and of the hop each pass
    scene_n = round(SCENE_S * SAMPLE_RATE) // unit * unit
    scene = street_scene(scene_n / SAMPLE_RATE, SAMPLE_RATE, rng)[:scene_n]
    done, next_demo = 0, demo_every_s * SAMPLE_RATE
    while done < total_samples:
        if done >= next_demo and total_samples - done >= len(demo):  # whole passes only
            kind, block = "demo", demo
            next_demo = done + len(demo) + demo_every_s * SAMPLE_RATE
        else:
            kind, block = "scene", street_scene(scene_n / SAMPLE_RATE, SAMPLE_RATE, rng)[:scene_n] if fresh else scene
        block = block[: total_samples - done]
        done += len(block)
        yield kind, block


def _percentiles_ms(x: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(x, 50)) * 1000, 3), "p99_ms": round(float(np.percentile(x, 99)) * 1000, 3)}


def soak(minutes: float = 180.0, chunk_ms: float = 100.0, model: str | None = None, seed: int = 0,
         demo_every_min: float = 5.0, fresh: bool = True, progress: bool = False, **detector_options) -> dict:
    """Stream `minutes` of audio through one Recognizer; return the figures described in the module docstring."""
    loaded = load_model(model, device="cpu")
    rec = Recognizer(loaded, **detector_options)
    chunk = round(chunk_ms * SAMPLE_RATE / 1000)
    n_chunks = -(-round(minutes * 60 * SAMPLE_RATE) // chunk)
    total = n_chunks * chunk
    # written through up front: np.zeros' pages would only become resident as the run fills them, which
    # would show up as RSS growth of 16 bytes per chunk
    wall = np.full(n_chunks, np.nan)
    cpu = np.full(n_chunks, np.nan)
    edge = max(1, int(n_chunks * EDGE_FRACTION))
    demo = read_audio(DEMO)
    rss = {"after_load_mb": rss_mb()}
    rss_trace = []
    passes: list[tuple[float, float]] = []  # (start_s, end_s) of each demo pass
    detections = []
    i = 0
    started = time.perf_counter()
    hop = round(rec.config.hop_ms * SAMPLE_RATE / 1000)
    for kind, block in audio_blocks(total, chunk, demo, demo_every_min * 60, np.random.default_rng(seed), fresh, hop):
        if kind == "demo":
            passes.append((i * chunk / SAMPLE_RATE, (i * chunk + len(block)) / SAMPLE_RATE))
        for start in range(0, len(block), chunk):
            t0, c0 = time.perf_counter(), time.thread_time()
            detections += rec.feed(block[start : start + chunk])
            cpu[i], wall[i] = time.thread_time() - c0, time.perf_counter() - t0
            i += 1
            if i == edge:
                rss["after_warmup_mb"] = rss_mb()
            if i % edge == 0:
                rss_trace.append((round(i * chunk / SAMPLE_RATE / 60, 2), round(rss_mb(), 1)))
                if progress:
                    print(f"  {i * chunk / SAMPLE_RATE / 60:7.1f} min of audio, RSS {rss_mb():.1f} MB, "
                          f"{time.perf_counter() - started:.0f} s", flush=True)
    detections += rec.flush()
    elapsed = time.perf_counter() - started
    rss["end_mb"] = rss_mb()
    rss["growth_since_warmup_mb"] = round(rss["end_mb"] - rss["after_warmup_mb"], 2)
    rss["peak_mb"] = rss_mb("VmHWM")
    audio_s = total / SAMPLE_RATE
    in_pass = [[d for d in detections if s <= (d.start_s + d.end_s) / 2 < e] for s, e in passes]
    per_pass = [[(d.label, d.score, round(d.start_s - s, 3), round(d.end_s - s, 3)) for d in p]
                for p, (s, _) in zip(in_pass, passes)]
    street_h = (audio_s - sum(e - s for s, e in passes)) / 3600
    n_street = len(detections) - sum(len(p) for p in in_pass)
    return {
        "audio_minutes": round(audio_s / 60, 2),
        "chunk_ms": chunk_ms,
        "n_chunks": n_chunks,
        "torch_threads": torch.get_num_threads(),
        "model": loaded.source,
        "fresh_scenes": fresh,
        "rss": {k: round(v, 1) for k, v in rss.items()},
        "rss_trace_min_mb": rss_trace,
        "throughput_x_realtime": {"recognizer": round(audio_s / float(wall.sum()), 1),
                                  "with_synthesis": round(audio_s / elapsed, 1)},
        "latency_wall": {"first": _percentiles_ms(wall[:edge]), "last": _percentiles_ms(wall[-edge:])},
        "latency_cpu": {"first": _percentiles_ms(cpu[:edge]), "last": _percentiles_ms(cpu[-edge:])},
        "n_detections": len(detections),
        "street_detections": n_street,
        "street_detections_per_hour": round(n_street / street_h, 1) if street_h else None,
        "demo_passes": len(passes),
        "detections_per_demo_pass": per_pass,
        "demo_passes_identical": all(p == per_pass[0] for p in per_pass),
        "elapsed_s": round(elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=180.0, help="minutes of audio to stream (default 180)")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="chunk length fed per call (default 100)")
    parser.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: default)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one stream per core)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthesized street")
    parser.add_argument("--demo-every-min", type=float, default=5.0, help="a demo pass every this many minutes")
    parser.add_argument("--threshold", type=float, default=None, help="detection threshold (default: the detector's)")
    parser.add_argument("--repeat-scene", action="store_true",
                        help="feed the first scene again and again instead of new ones: the process then allocates "
                        "only for the recognizer, which isolates its memory from the synthesizer's")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {} if args.threshold is None else {"threshold": args.threshold}
    print(f"soak: {args.minutes:g} min of audio in {args.chunk_ms:g} ms chunks, {args.threads} torch thread(s)"
          f"{', one scene repeated' if args.repeat_scene else ''}", flush=True)
    r = soak(args.minutes, args.chunk_ms, args.model, args.seed, args.demo_every_min, fresh=not args.repeat_scene,
             progress=True, **options)
    rss, lw, lc = r["rss"], r["latency_wall"], r["latency_cpu"]
    print(f"model {r['model']}; {r['audio_minutes']:g} min of audio, {r['n_chunks']} chunks, {r['elapsed_s']:g} s")
    print(f"RSS: {rss['after_load_mb']} MB after loading, {rss['after_warmup_mb']} MB after the first 10 %, "
          f"{rss['end_mb']} MB at the end: growth {rss['growth_since_warmup_mb']:+} MB; peak {rss['peak_mb']} MB")
    print(f"RSS trace (audio min, MB): {r['rss_trace_min_mb']}")
    print(f"throughput: {r['throughput_x_realtime']['recognizer']}x real time (recognizer), "
          f"{r['throughput_x_realtime']['with_synthesis']}x with the audio synthesis")
    for name, lat in (("wall", lw), ("CPU", lc)):
        print(f"latency per {args.chunk_ms:g} ms chunk ({name}): first 10 % p50 {lat['first']['p50_ms']} ms, "
              f"p99 {lat['first']['p99_ms']} ms; last 10 % p50 {lat['last']['p50_ms']} ms, p99 {lat['last']['p99_ms']} ms")
    first = [label for label, *_ in r["detections_per_demo_pass"][0]] if r["demo_passes"] else []
    print(f"detections: {r['n_detections']}; in the {r['demo_passes']} demo passes {first} — identical (label, "
          f"score, times) in every pass: {r['demo_passes_identical']}; in the synthesized street (no words): "
          f"{r['street_detections']}, {r['street_detections_per_hour']} per hour")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
