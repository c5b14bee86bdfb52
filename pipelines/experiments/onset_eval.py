"""False detections on noise that starts abruptly, as a stream opened in a street does.

    python pipelines/experiments/onset_eval.py [--model M ...] [--clips 120] [--seed 0]

Cuts `--clips` two-second excerpts from the held-out test noise (data/testset/noise, pipelines/build_testset.py)
and the Speech Commands noise in ../shared/data, each at a random level of −45…−15 dB RMS, transcribes each as
its own stream (its history before the first sample is silence) and counts the detections, and how many of
them start in the first 0.3 s. Every detection here is a false alarm: there is no speech.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import drsn_asr  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio  # noqa: E402

NOISE_DIRS = (REPO / "data" / "testset" / "noise", REPO.parent / "shared" / "data" / "speech-commands-noise")
CLIP_S = 2.0
ONSET_S = 0.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["default"])
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    noises = [read_audio(p) for d in NOISE_DIRS for p in sorted(d.glob("*.wav"))]
    if not noises:
        raise SystemExit(f"no noise found in {NOISE_DIRS[0]}: run pipelines/build_testset.py first")
    rng = np.random.default_rng(args.seed)
    n = round(CLIP_S * SAMPLE_RATE)
    clips = []
    for i in range(args.clips):
        source = noises[i % len(noises)]
        start = int(rng.integers(0, len(source) - n))
        clip = source[start : start + n]
        clips.append((clip / max(1e-6, float(np.sqrt(np.mean(clip**2)))) * 10 ** (rng.uniform(-45, -15) / 20)).astype(np.float32))
    for name in args.model:
        model = drsn_asr.load_model(name, device="cpu")
        found = [drsn_asr.transcribe(clip, model=model) for clip in clips]
        n_onset = sum(d.start_s < ONSET_S for ds in found for d in ds)
        print(f"{name}: {sum(map(len, found))} detections on {len(clips)} noise clips "
              f"({sum(1 for ds in found if ds)} clips), {n_onset} of them starting in the first {ONSET_S} s")


if __name__ == "__main__":
    main()
