"""Two models' CPU cost per second of audio, paired in one process (experiment, issue 31).

    python pipelines/experiments/model_ab.py A B [--runs 6]     # e.g. models/teacher.pt default

A Recognizer of each model is fed the street demo alternately, chunk by chunk, in alternating order from run to
run, and each one's CPU time is summed, so that both see the same host at the same moments (this host's speed
drifts by 15-50% within an hour; separate bench runs cannot compare two models to better than that). Printed for
20 and 80 ms chunks, on an idle host and with a busy-loop process on the other core: both real-time factors and
B / A.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.audio import read_audio  # noqa: E402


def paired(recognizers: list[Recognizer], demo, chunk_ms: int, runs: int) -> list[float]:
    """The real-time factor (CPU time of feed calls) of each recognizer, fed `demo` alternately chunk by chunk."""
    n = 16000 * chunk_ms // 1000
    chunks = [demo[i : i + n] for i in range(0, len(demo) - n + 1, n)]
    spent = [0.0] * len(recognizers)
    for run in range(runs):
        order = list(enumerate(recognizers))[:: 1 if run % 2 == 0 else -1]
        for _, r in order:
            r.reset()
        for c in chunks:
            for k, r in order:
                t = time.process_time()
                r.feed(c)
                spent[k] += time.process_time() - t
    audio_s = runs * len(chunks) * chunk_ms / 1000
    return [s / audio_s for s in spent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    demo = read_audio(REPO / "drsn_asr" / "assets" / "street_demo.flac")
    recognizers = [Recognizer(load_model(args.a)), Recognizer(load_model(args.b))]
    for load in ("idle", "loaded"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
        try:
            for chunk_ms in (20, 80):
                a, b = paired(recognizers, demo, chunk_ms, args.runs)
                print(f"{load}, {chunk_ms} ms chunks: RTF {args.a} {a:.5f}, {args.b} {b:.5f}, B / A {b / a:.3f}",
                      flush=True)
        finally:
            if busy is not None:
                busy.kill()


if __name__ == "__main__":
    main()
