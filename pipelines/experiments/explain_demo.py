"""Build the README's explain picture: held-out spoken digits and a car horn, through the model and the ResNet.

    python pipelines/experiments/explain_demo.py [--out docs/explain_demo.png] [--model default] [--compare PATH] [--seed 0]

The recording (7 s at 16 kHz), all of it licensed or synthesized:
    quiet road rumble throughout (drsn_asr.training.noise.road_rumble, 26 dB below the speech);
    a digit at 1.3 s, clean (FSDD, speaker theo: held out from training; CC BY-SA 4.0);
    a car-horn honk from 2.8 s alone (drsn_asr.training.noise.car_horn, 6 dB above the speech);
    another digit at 4.8 s with a second honk over it.
--compare defaults to models/ablation/30_epochs/resnet.pt (the plain ResNet trained with the default's recipe)
when that file exists.
Prints, per shrinkage unit, mean τ and the zeroed share in horn-only, speech-only and quiet windows.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "pipelines"))

from build_demo import trim  # noqa: E402

from drsn_asr.training import noise  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio, write_audio  # noqa: E402
from drsn_asr.training.augment import active_rms  # noqa: E402
from drsn_asr.training.data import read_fsdd  # noqa: E402
from drsn_asr.tools.explain import explain  # noqa: E402
from drsn_asr.tools.explain_plot import save_report  # noqa: E402

FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
HELD_OUT_SPEAKERS = ("theo",)
TOTAL_S = 7.0
SPEECH_RMS = 0.05  # active RMS of each digit; a horn honk is noise.TARGET_RMS = 0.1 (+6 dB)
RUMBLE_RMS = 0.0025  # -26 dB re the speech: a quiet street, so silence is not digital zero
WORDS_AT_S = (1.3, 4.8)
HORNS_AT_S = (2.7, 4.6)  # the first alone, the second over the second digit
COMPARE = "models/ablation/30_epochs/resnet.pt"  # the plain ResNet trained with the default's recipe
HONK_S = 0.6


def _honk(rng: np.random.Generator) -> np.ndarray:
    """One HONK_S honk: car_horn draws its honk's length, so draw until one fills the clip (the rng decides)."""
    for _ in range(100):
        horn = noise.car_horn(HONK_S, SAMPLE_RATE, rng, n_honks=1, n_tones=2)
        sounding = np.flatnonzero(horn)  # the attack starts and the release ends at exactly 0
        if sounding[0] <= 1 and sounding[-1] >= len(horn) - 2:
            return horn
    raise RuntimeError(f"no honk of {HONK_S} s in 100 draws; noise.HORN_HONK_RANGE_S must reach past it")


def make_recording(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, float, float]], list[tuple[float, float]]]:
    """(audio, [(word, start_s, end_s)], [(honk start_s, honk end_s)])."""
    n = int(TOTAL_S * SAMPLE_RATE)
    x = noise.road_rumble(TOTAL_S, SAMPLE_RATE, rng, color="pink", cutoff_hz=1500.0) / noise.TARGET_RMS * RUMBLE_RMS
    digits = read_fsdd(FSDD, HELD_OUT_SPEAKERS)
    words = []
    for at_s, i in zip(WORDS_AT_S, rng.choice(len(digits), len(WORDS_AT_S), replace=False)):
        word = trim(read_audio(digits[i].path))
        word = word / active_rms(word, SAMPLE_RATE) * SPEECH_RMS
        at = int(at_s * SAMPLE_RATE)
        x[at : at + len(word)] += word
        words.append((f"{digits[i].word} ({digits[i].group})", at_s, at_s + len(word) / SAMPLE_RATE))
    honks = []
    for at_s in HORNS_AT_S:
        horn = _honk(rng)
        at = int(at_s * SAMPLE_RATE)
        x[at : at + len(horn)] += horn
        honks.append((at_s, at_s + len(horn) / SAMPLE_RATE))
    return x[:n].astype(np.float32), words, honks


def _overlaps(times_s: np.ndarray, window_s: float, spans: list[tuple[float, float]]) -> np.ndarray:
    out = np.zeros(len(times_s), bool)
    for start_s, end_s in spans:
        out |= (times_s > start_s) & (times_s - window_s < end_s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "explain_demo.png"), help=".png or .html")
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--compare", default=None, help=f"second model (default: {COMPARE} if present)")
    parser.add_argument("--audio-out", default=None, help="also write the recording here (wav/flac)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    compare_model = args.compare
    if compare_model is None and (REPO / COMPARE).is_file():
        compare_model = str(REPO / COMPARE)
    audio, words, honks = make_recording(np.random.default_rng(args.seed))
    if args.audio_out:
        write_audio(args.audio_out, audio)
    # both at a window every 50 ms, whatever hop the model carries: the same columns, a finer picture
    expl = explain(audio, model=args.model, device="cpu", hop_ms=50.0)
    compare = explain(audio, model=compare_model, device="cpu", hop_ms=50.0) if compare_model else None
    if compare is not None and Path(compare_model).is_relative_to(REPO):  # the picture names it as the repo does
        compare = replace(compare, model=str(Path(compare_model).relative_to(REPO)))
    said = ", ".join(f"'{w}' at {a:.1f} s" for w, a, _ in words)
    title = (f"Held-out digits {said}; car horn {honks[0][0]:.1f}–{honks[0][1]:.1f} s (alone) and "
             f"{honks[1][0]:.1f}–{honks[1][1]:.1f} s (over the second digit)")
    out = save_report(expl, args.out, compare=compare, title=title)
    print(f"wrote {out}" + ("" if compare else f" (no --compare: {COMPARE} not found)"))
    horn = _overlaps(expl.times_s, expl.window_s, honks)
    speech = _overlaps(expl.times_s, expl.window_s, [(a, b) for _, a, b in words]) & ~horn
    quiet = ~horn & ~speech & (expl.times_s >= expl.window_s)
    for name, tau, zeroed in zip(expl.unit_names, expl.tau_mean, expl.zero_fraction):
        cells = [f"{what} τ {tau[m].mean():.3f} zeroed {100 * zeroed[m].mean():.1f}%"
                 for what, m in (("horn", horn), ("speech only", speech), ("quiet", quiet))]
        print(f"{name}: " + " | ".join(cells))
    for e in [expl] + ([compare] if compare else []):
        print(f"{e.model}: " + (", ".join(f"{d.label} {d.score:.2f} at {d.start_s:.2f} s" for d in e.detections) or "no detections"))


if __name__ == "__main__":
    main()
