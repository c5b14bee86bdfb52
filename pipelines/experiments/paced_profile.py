"""Why a stream fed at a microphone's pace costs more than one fed back to back (experiment, issue 31).

    python pipelines/experiments/paced_profile.py [--model default] [--seconds 10]

1. The hop graph (embedding.HopSession, two frames at `default`'s hop) called after a pause of 0-160 ms, the
   pause slept or spent spinning in pure Python: thread CPU time of the call, median of 40.
2. `bench.paced_stream` (20 ms chunks in real time against back to back) as it is, and with the hop graph
   replaced by its own first outputs: how much of the paced cost is the network and how much the code around it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from drsn_asr import load_model  # noqa: E402
from drsn_asr.runtime import embedding  # noqa: E402
from drsn_asr.tools import bench  # noqa: E402
from hop_graph_ab import stream_inputs  # noqa: E402


def after_pauses(model) -> None:
    bank, audio, state, tail = stream_inputs(model, 1)
    graph = bank._hop_graph(bank.hop_frames)
    audio = np.random.default_rng(0).standard_normal((1, graph.samples)).astype(np.float32) * 0.1

    def call() -> float:
        t = time.thread_time()
        graph(audio, state, tail)
        return (time.thread_time() - t) * 1e6

    for _ in range(200):
        call()
    for how in ("spin", "sleep"):
        row = []
        for pause_ms in (0, 1, 5, 20, 160):
            spent = []
            for _ in range(40 if pause_ms < 100 else 12):
                if how == "sleep":
                    time.sleep(pause_ms / 1000)
                else:
                    end = time.perf_counter() + pause_ms / 1000
                    while time.perf_counter() < end:
                        pass
                spent.append(call())
            row.append(f"{pause_ms} ms: {np.median(spent):.0f}")
        print(f"hop graph after a pause ({how}), µs a call: " + ", ".join(row), flush=True)


def stubbed_graph(model, audio: np.ndarray) -> None:
    chunk = round(model.features.sample_rate * bench.PACED_CHUNK_MS / 1000)
    real = bench.paced_stream(model, audio, chunk)
    kept, first = embedding.HopSession.kept, {}

    def constant(self, samples, state, tail):  # the graph's first outputs, every call after
        if id(self) not in first:
            first[id(self)] = kept(self, samples, state, tail)
        probs, new_tail, new_state = first[id(self)]
        return probs.copy(), new_tail, new_state

    embedding.HopSession.kept = constant
    try:
        stub = bench.paced_stream(model, audio, chunk)
    finally:
        embedding.HopSession.kept = kept
    for name, r in (("as it is", real), ("graph stubbed", stub)):
        print(f"paced_stream, {name}: CPU ÷ audio time paced {r['paced_rtf_cpu']:.4f}, back to back "
              f"{r['tight_rtf_cpu']:.4f}; a paced feed that classified {r['classifying_feed_us']:.0f} µs, "
              f"that buffered {r['buffering_feed_us']:.0f} µs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    after_pauses(model)
    stubbed_graph(model, bench.noisy_recording(args.seconds))


if __name__ == "__main__":
    main()
