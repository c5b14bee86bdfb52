"""Where a hop of many lockstep streams goes (the figures behind docs/performance.md's "What the stream count
was spent on").

    python pipelines/experiments/streams_profile.py [--device cuda] [--model logmel] [--streams 8192] [--hops 8]

Feeds `--streams` streams one hop each per step, twice in the same run: with the decision rule on the host (numpy)
and on the model's device (`device_rule`), each with float32 and with int16 blocks. Each step is timed in two
parts, synchronising the device around each: the block (`_as_float_block`: the copy to the device and its check)
and the StreamBank step; it prints the median of each over `--hops` hops after a warm-up (the streams' first
frame, which a streaming frontend computes from a whole window, then three more hops), and whether both rules
made the same detections. Then, for the device-rule arm, a torch profiler table and a cProfile of three more full
`feed_many` steps. Wall-clock times.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr import load_model  # noqa: E402
from drsn_asr.tools.bench import _hop_samples, first_frame_hops, noisy_recording  # noqa: E402
from drsn_asr.runtime.multistream import MultiStreamRecognizer, _as_float_block  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, help="shipped model name or checkpoint (default: the default model)")
    parser.add_argument("--streams", type=int, default=8192)
    parser.add_argument("--hops", type=int, default=8, help="timed steps, after the warm-up")
    args = parser.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    model = load_model(args.model, device=dev)
    audio = noisy_recording(120.0)
    hop = _hop_samples(model)
    chunks = np.lib.stride_tricks.sliding_window_view(audio, hop)
    offsets = np.arange(args.streams, dtype=np.int64) * 104_729  # every stream hears a different part
    warm_up = first_frame_hops(model, hop) + 3
    found = {}
    for device_rule in (False, True):
        multi = MultiStreamRecognizer(model, device_rule=device_rule)
        for _ in range(args.streams):
            multi.add_stream()
        multi.feed_many(chunks[offsets % len(chunks)])  # builds the slots feed_many caches
        slots = multi._all[1]
        for dtype in (np.float32, np.int16):
            multi.reset()
            parts: dict[str, list[float]] = {"block": [], "bank": [], "total": []}
            detections = []
            with torch.inference_mode():
                for i in range(warm_up + args.hops):
                    block = chunks[(offsets + i * hop) % len(chunks)]
                    block = np.round(block * 32767).astype(np.int16) if dtype == np.int16 else block
                    sync()
                    t0 = time.perf_counter()
                    x = _as_float_block(block, args.streams, dev)
                    sync()
                    t1 = time.perf_counter()
                    detections += multi._bank.feed(slots, x)
                    sync()
                    t2 = time.perf_counter()
                    for name, value in zip(parts, (t1 - t0, t2 - t1, t2 - t0)):
                        parts[name].append(value * 1000)
            found[device_rule, dtype] = detections
            print(f"{args.streams} streams of {model.source} on {dev}, rule on the {'device' if device_rule else 'host'}, "
                  f"{np.dtype(dtype).name} blocks, median ms per hop over {args.hops} hops: "
                  + ", ".join(f"{k} {np.median(v[warm_up:]):.1f}" for k, v in parts.items())
                  + f" ({len(detections)} detections)", flush=True)
    for dtype in (np.float32, np.int16):
        print(f"{np.dtype(dtype).name}: the same detections with either rule: {found[True, dtype] == found[False, dtype]}")
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as profile, torch.inference_mode():
        for _ in range(3):
            multi._bank.feed(slots, x)
            sync()
    print(profile.key_averages().table(sort_by="cpu_time_total", row_limit=25), flush=True)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(3):
        multi.feed_many(chunks[(offsets + i * hop) % len(chunks)])
    sync()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
