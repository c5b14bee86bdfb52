"""A custom-command model (drsn-asr train-words) on real speakers and on long non-command street audio.

    python pipelines/words_eval.py --model models/custom/coffee.pt [--thresholds 0.6,0.8,0.9] [--json OUT]

1. Real recordings: the coffee-shop orders of ../shared/data/command-sentences whose name hash lies in
   [0.8, 1.0) — never trained on by the default model (it used [0, 0.8)) nor by train-words (it uses [0, 0.8)
   minus any recording that mentions a phrase word, and validates on TTS voices only). Each recording is
   streamed alone through a Recognizer, with 1 s of the same background before and after. A phrase detected in
   a recording whose labels contain it is a hit (once per recording); every other detection is a false
   accept. The labels are intent slots ("dark roast", "double shot"), so a phrase said outside a slot would
   count as a false accept: the figures are, if anything, pessimistic. Clean, and over synthesized street
   noise (no babble) at 10 and 0 dB SNR on the active speech.
2. Long non-command audio: synthesized street scenes (horns, traffic, engines, sirens, wind, road rumble)
   with the held-out FSDD speaker's digits spoken over it every few seconds at 10 dB: false accepts per hour.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr import load_model, transcribe  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio  # noqa: E402
from drsn_asr.training.augment import active_rms  # noqa: E402
from drsn_asr.runtime.config import LABEL_SILENCE, LABEL_UNKNOWN  # noqa: E402
from drsn_asr.training.data import read_fsdd, sentence_labels, stable_fraction  # noqa: E402
from drsn_asr.training.noise import street_scene  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SENTENCES = SHARED / "command-sentences" / "clean"
NOISE_KINDS = ["car_horn", "traffic_passby", "engine", "siren", "road_rumble", "wind"]


def real_recordings(model, snr_db: float | None, seed: int, threshold: float) -> dict:
    phrases = [l for l in model.labels if l not in (LABEL_UNKNOWN, LABEL_SILENCE)]
    labels = sentence_labels(SENTENCES)
    files = [p for p in sorted(SENTENCES.glob("*.flac")) if 0.8 <= stable_fraction(p.name) < 1.0]
    rng = np.random.default_rng(seed)
    hits = {p: 0 for p in phrases}
    present = {p: 0 for p in phrases}
    false_accepts, seconds = [], 0.0
    for path in files:
        speech = read_audio(path)
        said = {p for p in phrases if re.search(rf"\b{re.escape(p)}\b", labels.get(path.stem, ""))}
        audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech, np.zeros(SAMPLE_RATE, np.float32)])
        if snr_db is not None:  # the same street under the whole recording, at `snr_db` below the speech
            background = street_scene(len(audio) / SAMPLE_RATE, SAMPLE_RATE, rng, kinds=NOISE_KINDS)
            gain = active_rms(speech, SAMPLE_RATE) / (float(np.sqrt(np.mean(background**2))) * 10 ** (snr_db / 20))
            audio = audio + background.astype(np.float32) * gain
            audio /= max(1.0, float(np.abs(audio).max()) / 0.99)
        seconds += len(audio) / SAMPLE_RATE
        for p in said:
            present[p] += 1
        seen = set()
        for d in transcribe(audio.astype(np.float32), model=model, threshold=threshold):
            if d.label in said and d.label not in seen:
                seen.add(d.label)
                hits[d.label] += 1
            else:
                false_accepts.append({"file": path.name, "label": d.label, "said": sorted(said)})
    n_present = sum(present.values())
    return {
        "snr_db": snr_db, "n_recordings": len(files), "audio_s": round(seconds, 1),
        "recall": round(sum(hits.values()) / max(1, n_present), 4), "n_phrases_said": n_present,
        "recall_per_phrase": {p: round(hits[p] / present[p], 3) if present[p] else None for p in phrases},
        "said_per_phrase": present,
        "false_accepts": len(false_accepts), "false_accepts_per_hour": round(len(false_accepts) / seconds * 3600, 1),
        "false_accept_examples": false_accepts[:20],
    }


def long_street(model, minutes: float, seed: int, threshold: float) -> dict:
    rng = np.random.default_rng(seed)
    digits = read_fsdd(SHARED / "fsdd" / "recordings", ("theo",))
    parts, seconds = [], 0.0
    while seconds < minutes * 60:
        scene = street_scene(10.0, SAMPLE_RATE, rng, kinds=NOISE_KINDS).astype(np.float32)
        if rng.random() < 0.5:  # a spoken digit (not a command of this model) somewhere in the scene
            word = read_audio(digits[int(rng.integers(len(digits)))].path)
            start = int(rng.integers(0, len(scene) - len(word)))
            noise_rms = float(np.sqrt(np.mean(scene[start : start + len(word)] ** 2)))
            scene[start : start + len(word)] += word * (noise_rms * 10 ** (10.0 / 20) / active_rms(word, SAMPLE_RATE))
        scene *= 10 ** (rng.uniform(-20, 0) / 20) / max(1.0, float(np.abs(scene).max()) / 0.99)
        parts.append(scene)
        seconds += 10.0
    audio = np.concatenate(parts)
    found = transcribe(audio.astype(np.float32), model=model, threshold=threshold)
    return {"audio_s": round(seconds, 1), "false_accepts": len(found),
            "false_accepts_per_hour": round(len(found) / seconds * 3600, 2),
            "labels": sorted({d.label for d in found})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a train-words checkpoint")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long street recording")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--thresholds", default="0.6,0.8,0.9", help="detector thresholds to report (default 0.6 is "
                        "the Recognizer's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    result = {"model": args.model, "labels": model.labels, "by_threshold": {}}
    for threshold in [float(t) for t in args.thresholds.split(",")]:
        res = result["by_threshold"][f"{threshold:g}"] = {
            "real": [real_recordings(model, snr, args.seed, threshold) for snr in (None, 10.0, 0.0)],
            "long_street": long_street(model, args.minutes, args.seed, threshold)}
        print(f"threshold {threshold:g}")
        for r in res["real"]:
            where = "clean" if r["snr_db"] is None else f"{r['snr_db']:g} dB"
            print(f"  real recordings, {where}: recall {r['recall']:.1%} of {r['n_phrases_said']} phrases said in "
                  f"{r['n_recordings']} recordings; {r['false_accepts']} false accepts "
                  f"({r['false_accepts_per_hour']}/h of speech)")
        s = res["long_street"]
        print(f"  long street + digits ({s['audio_s'] / 60:.0f} min): {s['false_accepts']} false accepts "
              f"({s['false_accepts_per_hour']}/h)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
