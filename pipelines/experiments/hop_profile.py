"""Where a live hop's time goes, and what cheaper networks would cost (the figures behind docs/performance.md's
"Why the target RTF ≤ 0.005 is not reached").

    python pipelines/experiments/hop_profile.py [--seconds 60] [--hop-ms MS]

At one thread, feeds the street demo (tiled to `--seconds`) to a Recognizer one hop per chunk (the hop the model
carries, or `--hop-ms`) and reports, per hop:
- the whole `feed`, and the time inside the network, the frontend (the new log-mel frames, or the speech
  embedding's new frames with its network's kept state) and the decision rule (timers around those calls; the
  rest is bookkeeping);
- the same stream with the network replaced by constant posteriors: what a free model would leave (on the separate
  frontend and network calls: for the speech embedding that costs more than the one hop graph with the network);
then the batch-1 forward time on ONNX Runtime of the default architecture and of cheaper, untrained ones.
Every figure is this thread's CPU time (time.thread_time): other processes inflate it less than wall time, but
a loaded machine (shared caches, turbo) still does; timers add a little overhead of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.audio import read_audio  # noqa: E402
from drsn_asr.runtime.inference import FoldedNet, OnnxNet  # noqa: E402
from drsn_asr.runtime.model import KeywordNet, count_parameters  # noqa: E402
from drsn_asr.tools.bench import hop_parts  # noqa: E402

CANDIDATES = {  # name: ModelConfig fields changed from the shipped default's architecture
    "default": {},
    "without the relative input": {"relative_input": False},
    "with the floor input (trial N)": {"floor_input": True},
    "stem 8, stages [16, 24, 32]": {"stem_channels": 8, "stage_channels": (16, 24, 32)},
    "stem 8, stages [16, 40, 64]": {"stem_channels": 8, "stage_channels": (16, 40, 64)},
    "stages [24, 48, 80], blocks [1, 1, 2] (trial W)": {"stage_channels": (24, 48, 80), "stage_blocks": (1, 1, 2)},
}


def per_hop_us(rec: Recognizer, audio: np.ndarray, chunk: int, probs=None) -> float:
    """CPU time of one `feed` of a `chunk`-sample chunk, averaged over the audio (µs); `probs` replaces the
    network."""
    rec.reset()  # (also takes the network afresh)
    if probs is not None:  # on the separate calls: a hop graph (embedding.HopSession) holds the network
        rec._bank._probs, rec._bank._hop_session = probs, None
    t = time.thread_time()
    for start in range(0, len(audio), chunk):
        rec.feed(audio[start : start + chunk])
    return (time.thread_time() - t) / (len(audio) / chunk) * 1e6


def forward_us(forward, x: np.ndarray, n: int = 300) -> float:
    """Best of 5 runs of `n` batch-1 forwards (µs each)."""
    runs = []
    for _ in range(5):
        t = time.thread_time()
        for _ in range(n):
            forward(x)
        runs.append((time.thread_time() - t) / n * 1e6)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hop-ms", type=float, default=None, help="classification hop (default: the model's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    demo = read_audio(REPO / "drsn_asr" / "assets" / "street_demo.flac")
    audio = np.tile(demo, int(np.ceil(args.seconds * 16000 / len(demo))))[: int(args.seconds * 16000)]
    rec = Recognizer(load_model(device="cpu"), **({} if args.hop_ms is None else {"hop_ms": args.hop_ms}))
    hop_ms = rec.config.hop_ms
    chunk = round(hop_ms * 16000 / 1000)

    whole = per_hop_us(rec, audio, chunk)
    parts = hop_parts(rec.model, audio, chunk, **({} if args.hop_ms is None else {"hop_ms": args.hop_ms}))
    constant = np.full((1, len(rec.labels)), 1 / len(rec.labels), np.float32)
    free_model = per_hop_us(rec, audio, chunk, probs=lambda windows: np.repeat(constant, len(windows), axis=0))

    print(f"per {hop_ms:g} ms hop, CPU 1 thread ({args.seconds:.0f} s of audio, {type(rec._bank.forward).__name__}):")
    print(f"  whole feed               {whole:6.0f} µs   (with timers: {parts['whole']:.0f})")
    print(f"  network                  {parts['network']:6.0f} µs")
    print(f"  frontend: the new frames {parts['frontend']:6.0f} µs")
    print(f"  both in one graph        {parts['graph']:6.0f} µs")
    print(f"  decision rule            {parts['rule']:6.0f} µs")
    print(f"  the rest (bookkeeping)   {parts['rest']:6.0f} µs")
    print(f"  network replaced by a constant (separate calls, no hop graph): {free_model:.0f} µs per hop")
    print("forward on ONNX Runtime, batch 1 (untrained weights: the cost, not the accuracy):")
    shipped = rec.model.net
    x = np.random.default_rng(0).standard_normal((1, shipped.features.n_mels, shipped.window_frames)).astype(np.float32)
    for name, fields in CANDIDATES.items():
        net = KeywordNet(dataclasses.replace(shipped.config, **fields), shipped.features, len(rec.labels)).eval()
        onnx = OnnxNet(FoldedNet(net), threads=1)
        print(f"  {name:46s} {count_parameters(net):7,d} parameters  {forward_us(onnx.probs, x):5.0f} µs")


if __name__ == "__main__":
    main()
