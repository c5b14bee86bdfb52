"""Long runs and concurrency: the short CI version of pipelines/experiments/soak.py (flat memory, steady per-chunk cost, no
drift), and several recognizers in threads at once making exactly the decisions each makes alone.

The long soak is `python pipelines/experiments/soak.py --minutes 180`; its figures are in docs/reliability.md.
"""

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import drsn_asr
from drsn_asr.runtime.audio import read_audio, resample
from drsn_asr.runtime.stream import Recognizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pipelines" / "experiments"))

from soak import soak  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread CPU time then counts all of the recognizer's work
    yield
    torch.set_num_threads(threads)


def test_short_soak_has_flat_memory_steady_cost_and_no_drift(one_thread):
    r = soak(minutes=3.0, chunk_ms=100.0, demo_every_min=0.5)
    assert r["audio_minutes"] == 3.0 and r["n_chunks"] == 1800
    assert r["rss"]["growth_since_warmup_mb"] < 50, r["rss"]
    first, last = r["latency_cpu"]["first"], r["latency_cpu"]["last"]
    assert last["p50_ms"] <= 2 * first["p50_ms"] + 0.5, r["latency_cpu"]
    assert last["p99_ms"] <= 5 * first["p99_ms"], r["latency_cpu"]
    assert r["throughput_x_realtime"]["recognizer"] > 1.0
    assert r["demo_passes"] >= 2 and r["demo_passes_identical"], r["detections_per_demo_pass"]


def test_recognizers_in_threads_decide_as_they_do_alone(one_thread):
    """Four streams (different audio, rates, dtypes and settings) on one shared LoadedModel, fed concurrently
    in ragged chunks, make exactly the detections each makes when run alone."""
    model = drsn_asr.load_model(device="cpu")
    demo = read_audio(REPO / "drsn_asr" / "assets" / "street_demo.flac")
    streams = {
        "16 kHz float32": (demo[: 16000 * 12], {}, 16000),
        "48 kHz, resampled": (resample(demo[16000 * 12 : 16000 * 22], 16000, 48000), {}, 48000),
        "int16": (np.round(demo[16000 * 22 : 16000 * 34] * 32767).astype(np.int16), {}, 16000),
        "trigger-happy": (demo[16000 * 5 : 16000 * 15], {"threshold": 0.0, "refractory_ms": 0.0}, 16000),
    }
    options = {name: {"threshold": 0.3, **opts} for name, (_, opts, _) in streams.items()}

    def run(name, chunks, out):
        audio, _, rate = streams[name]
        rec = Recognizer(model, sample_rate=rate, **options[name])
        got, pos = [], 0
        for n in chunks:
            got += rec.feed(audio[pos : pos + n])
            pos += n
        out[name] = got + rec.flush()

    rng = np.random.default_rng(0)
    chunking = {name: rng.integers(1, 4000, size=len(a) // 100).tolist() for name, (a, _, _) in streams.items()}
    alone = {}
    for name in streams:
        run(name, [len(streams[name][0])], alone)
    together = {}
    threads = [threading.Thread(target=run, args=(name, chunking[name], together)) for name in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together == alone
    assert alone["trigger-happy"], "nothing to compare"
