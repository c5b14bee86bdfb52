"""The decision rule's single-stream path against its vectorized rows, in a Recognizer (experiment, issue 31).

    python pipelines/experiments/rule_ab.py [--model default] [--runs 6]

Two Recognizers of the model in one process; one has its rule forced onto the vectorized rows
(`DecisionRule._step_rows`), the other takes `step`'s scalar path for its one stream. They are fed the street demo
alternately, chunk by chunk, in alternating order from run to run, and each one's CPU time is summed. Printed for 20
and 80 ms chunks, on an idle host and with a busy-loop process on the other core: both real-time factors and their
ratio (scalar / rows). The detections are checked equal first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.audio import read_audio  # noqa: E402
from model_ab import paired  # noqa: E402


def paired_paths(model: str, demo, chunk_ms: int, runs: int) -> tuple[float, float]:
    """(RTF of the vectorized rows, RTF of the scalar path), CPU time, fed alternately."""
    rows, scalar = Recognizer(load_model(model)), Recognizer(load_model(model))
    rows._bank.rule.step = rows._bank.rule._step_rows
    n = 16000 * chunk_ms // 1000
    chunks = [demo[i : i + n] for i in range(0, len(demo) - n + 1, n)]
    found = [[d for c in chunks for d in r.feed(c)] for r in (rows, scalar)]
    if found[0] != found[1]:
        raise SystemExit(f"the two paths detected differently at {chunk_ms} ms chunks")
    return tuple(paired([rows, scalar], demo, chunk_ms, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    demo = read_audio(REPO / "drsn_asr" / "assets" / "street_demo.flac")
    for load in ("idle", "loaded"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
        try:
            for chunk_ms in (20, 80):
                rows, scalar = paired_paths(args.model, demo, chunk_ms, args.runs)
                print(f"{load}, {chunk_ms} ms chunks: RTF rows {rows:.5f}, scalar {scalar:.5f}, "
                      f"scalar / rows {scalar / rows:.3f}", flush=True)
        finally:
            if busy is not None:
                busy.kill()


if __name__ == "__main__":
    main()
