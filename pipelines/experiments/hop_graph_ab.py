"""The hop graph (embedding.HopSession) as built by this checkout against the one a git revision builds, paired
in one process (experiment, issue 31).

    python pipelines/experiments/hop_graph_ab.py REV [--model default] [--batch 1 16] [--pairs 40]

`drsn_asr/runtime/embedding.py` of REV is loaded beside this checkout's and both build the hop graph of the same
frontend and classifier; both graphs run the same inputs (a stream's state after 30 hops of noise, repeated to
`--batch` rows), in blocks of 200 calls, alternating which goes first. Printed: the largest difference of their
outputs, and this checkout's time / REV's per pair (median and quartiles: this host's speed drifts by 15-50%
within minutes, so only pairs compare). Thread CPU time, one intra-op thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime import embedding  # noqa: E402


def module_at(rev: str):
    """embedding.py of `rev`, imported as a sibling of this checkout's (its relative imports resolve here)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:drsn_asr/runtime/embedding.py"],
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("drsn_asr.runtime._embedding_at_rev", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "drsn_asr.runtime"
    exec(compile(source, f"{rev}:drsn_asr/runtime/embedding.py", "exec"), module.__dict__)
    return module


def stream_inputs(model, batch: int) -> tuple:
    """A live stream's hop inputs (audio, frontend state, kept embeddings) after 30 hops of noise, `batch` rows."""
    seen = []
    kept = embedding.HopSession.kept

    def recording(self, audio, state, tail):
        seen.append((audio.copy(), [t.clone() for t in state], tail.clone()))
        return kept(self, audio, state, tail)

    embedding.HopSession.kept = recording
    try:
        rec = Recognizer(model)
        rng = np.random.default_rng(0)
        for _ in range(30):
            rec.feed((rng.standard_normal(1280) * 0.1).astype(np.float32))
    finally:
        embedding.HopSession.kept = kept
    if not seen:
        raise SystemExit(f"{model.source}: its live hops do not run as a hop graph (not a speech-embedding model?)")
    audio, state, tail = seen[-1]
    return (rec._bank, np.repeat(audio, batch, 0), [t.repeat(batch, *[1] * (t.dim() - 1)) for t in state],
            np.repeat(tail.numpy(), batch, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--pairs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    old = module_at(args.rev)
    for batch in args.batch:
        bank, audio, state, tail = stream_inputs(model, batch)
        head, frames = bank.forward.folded, bank.window_frames
        graphs = {"rev": old.HopSession(bank.frontend, head, frames, 1), "here": embedding.HopSession(bank.frontend, head, frames, 1)}
        out = {k: g(audio, state, tail) for k, g in graphs.items()}
        spent: dict[str, list[float]] = {k: [] for k in graphs}
        for pair in range(args.pairs):
            for k in (("rev", "here") if pair % 2 else ("here", "rev")):
                for _ in range(20):
                    graphs[k](audio, state, tail)
                t = time.thread_time()
                for _ in range(200):
                    graphs[k](audio, state, tail)
                spent[k].append((time.thread_time() - t) / 200 * 1e6)
        ratio = np.array(spent["here"]) / np.array(spent["rev"])
        q25, q50, q75 = np.percentile(ratio, [25, 50, 75])
        print(f"batch {batch}: max |posterior difference| {np.abs(out['here'][0] - out['rev'][0]).max():.2g}, "
              f"embeddings {np.abs(out['here'][1] - out['rev'][1]).max():.2g}; here / {args.rev} per pair: "
              f"median {q50:.3f} (quartiles {q25:.3f}-{q75:.3f}); {args.rev} median {np.median(spent['rev']):.0f} µs "
              f"a call", flush=True)


if __name__ == "__main__":
    main()
