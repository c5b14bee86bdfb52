"""Streaming evaluation on a long mixed street recording: detections vs ground truth.

    python pipelines/stream_eval.py [--model M] [--minutes 10] [--seed 11] [--json OUT] [--split test]
                                    [--split validation --config RECIPE]

Builds (pipelines/build_demo.py) a recording over a synthesized street, feeds it to one Recognizer in 10 ms chunks
as a live microphone would, and reports the figures below. `--split test` (default): held-out real speakers'
digits and held-out sentences, with sirens (a noise kind held out of training) among the traffic.
`--split validation`: keywords and other words of the validation split of the recipe (`--config`): its TTS
voices, its real validation speakers (half of the keywords, when it has any: configs/tuning.yaml), its validation
sentences; street noise of the training kinds only. It is the recording on which detector settings may be chosen
(`best_by_f1`, see `best_point`), since nothing in it is trained on or tested on. Reported:
- hits (right label near a spoken keyword), substitutions, misses, false alarms (and per hour of audio);
- latency: stream time at which the callback fired minus the true end of the word (median, p90), plus the
  measured compute time per 10 ms chunk, which a live stream adds on top;
- localisation error of start_s / end_s;
- the operating curve: recall, substitutions, false alarms (on sentences / on noise alone) and F1 at each of
  `--thresholds` and `--hops-ms` (precision = hits / all detections, recall = hits / keywords spoken), and, on
  the validation split only, the best point by F1.
A detection belongs to a spoken item when their centres are within `--tolerance-s` (default 0.75 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "pipelines"))

from build_demo import held_out_speech, make_recording, validation_speech  # noqa: E402

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.checkpoint import save_model  # noqa: E402

CHUNK_SAMPLES = 160


def score(detections: list[tuple], truth: list[dict], duration_s: float, tolerance_s: float) -> dict:
    """Match (detection, emitted_at_s) pairs to ground-truth items; return the counts and timing figures.
    `false_alarms_on_sentences` counts those on any non-keyword speech (in validation, other words too)."""
    used = set()
    hits, subs, false_alarms, on_speech, latencies, start_err, end_err = 0, 0, 0, 0, [], [], []
    centres = np.array([(w["start_s"] + w["end_s"]) / 2 for w in truth])
    order = np.argsort(centres, kind="stable")
    ordered = centres[order]
    for det, emitted_s in detections:
        centre = (det.start_s + det.end_s) / 2
        lo, hi = np.searchsorted(ordered, centre - tolerance_s - 1e-9), np.searchsorted(ordered, centre + tolerance_s + 1e-9, "right")
        near = sorted(i for i in order[lo:hi].tolist()
                      if i not in used and abs(centre - centres[i]) <= tolerance_s)
        if not near or truth[near[0]]["label"] == "_unknown_":
            false_alarms += 1
            on_speech += bool(near)
            continue
        i = near[0]
        used.add(i)
        if det.label == truth[i]["label"]:
            hits += 1
            latencies.append(emitted_s - truth[i]["end_s"])
            start_err.append(abs(det.start_s - truth[i]["start_s"]))
            end_err.append(abs(det.end_s - truth[i]["end_s"]))
        else:
            subs += 1
    n_keywords = sum(w["label"] != "_unknown_" for w in truth)
    n_detections = hits + subs + false_alarms
    f1 = 2 * hits / max(1, n_detections + n_keywords)  # = 2PR / (P + R)
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 3) if xs else None  # noqa: E731
    return {
        "n_keywords": n_keywords, "hits": hits, "substitutions": subs, "misses": n_keywords - hits - subs,
        "recall": round(hits / max(1, n_keywords), 4), "f1": round(f1, 4), "false_alarms": false_alarms,
        "false_alarms_on_sentences": on_speech, "false_alarms_on_noise": false_alarms - on_speech,
        "false_alarms_per_hour": round(false_alarms / duration_s * 3600, 2),
        "latency_s_median": pct(latencies, 50), "latency_s_p90": pct(latencies, 90),
        "start_error_s_median": pct(start_err, 50), "end_error_s_median": pct(end_err, 50),
    }


def operating_curve(model, audio: np.ndarray, truth: list[dict], duration_s: float, tolerance_s: float,
                    thresholds: list[float], hops_ms: list[float]) -> list[dict]:
    """Recall, F1, substitutions and false alarms at each hop and detection threshold (other options: the model's,
    else the defaults). Fed in 1 s blocks: the detections are the same as in 10 ms chunks, only the emission
    times (latency) are not."""
    curve = []
    for hop_ms in hops_ms:
        for threshold in thresholds:
            rec = Recognizer(model, threshold=threshold, hop_ms=hop_ms)
            found = [d for start in range(0, len(audio), 16000) for d in rec.feed(audio[start : start + 16000])]
            r = score([(d, d.end_s) for d in found + rec.flush()], truth, duration_s, tolerance_s)
            curve.append({"hop_ms": hop_ms, "threshold": threshold, **{k: r[k] for k in (
                "recall", "f1", "substitutions", "false_alarms", "false_alarms_per_hour", "false_alarms_on_sentences",
                "false_alarms_on_noise")}})
    return curve


def best_point(curve: list[dict], f1_tolerance: float = 0.01) -> dict:
    """The point of highest F1; among those within `f1_tolerance` of it, the longest hop (the cheapest to run),
    then the highest threshold (the fewest false alarms)."""
    top = max(p["f1"] for p in curve)
    return max((p for p in curve if p["f1"] >= top - f1_tolerance), key=lambda p: (p["hop_ms"], p["threshold"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tolerance-s", type=float, default=0.75)
    parser.add_argument("--json", default=None)
    parser.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9",
                        help="also score the recording at these detection thresholds (the operating curve)")
    parser.add_argument("--hops-ms", default=None,
                        help="also sweep these classification hops, e.g. 50,80,100 (default: the model's hop only)")
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="held-out test speech and noise, or the recipe's validation split (see above)")
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"),
                        help="with --split validation: the recipe whose validation split is spoken")
    parser.add_argument("--write-model", default=None, metavar="OUT.pt",
                        help="with --split validation: write the model to OUT.pt carrying the best hop and threshold")
    args = parser.parse_args()
    if args.write_model and args.split != "validation":
        parser.error("--write-model chooses detector settings on the recording: only with --split validation")
    rng = np.random.default_rng(args.seed)
    n_items = int(args.minutes * 60 / 2.4)  # ~0.7 s of speech + ~1.7 s of gap each
    if args.split == "test":
        words, sentences = held_out_speech(rng, int(n_items * 0.85), max(1, int(n_items * 0.15)))
        audio, truth = make_recording(words, sentences, rng)
    else:
        words, others, sentences = validation_speech(rng, int(n_items * 0.7), int(n_items * 0.15),
                                                     max(1, int(n_items * 0.15)), recipe=Path(args.config))
        audio, truth = make_recording(words, sentences, rng, others=others, sirens=False)
    duration_s = len(audio) / 16000
    model = load_model(args.model, device="cpu")
    detections = []
    rec = Recognizer(model, on_detection=lambda d: detections.append((d, rec.time_s)))
    compute_s = []
    for start in range(0, len(audio), CHUNK_SAMPLES):
        t0 = time.perf_counter()
        rec.feed(audio[start : start + CHUNK_SAMPLES])
        compute_s.append(time.perf_counter() - t0)
    rec.flush()
    result = score(detections, truth, duration_s, args.tolerance_s)
    result.update({
        "model": model.source, "split": args.split, "duration_s": round(duration_s, 1), "seed": args.seed,
        **({"config": args.config} if args.split == "validation" else {}),
        "compute_ms_per_10ms_chunk_median": round(1000 * float(np.median(compute_s)), 3),
        "compute_ms_per_10ms_chunk_p99": round(1000 * float(np.percentile(compute_s, 99)), 3),
        "real_time_factor": round(sum(compute_s) / duration_s, 4),
        "hop_ms": rec.config.hop_ms, "threshold": rec.config.threshold,
        "operating_curve": operating_curve(
            model, audio, truth, duration_s, args.tolerance_s, [float(t) for t in args.thresholds.split(",") if t],
            [float(h) for h in args.hops_ms.split(",") if h] if args.hops_ms else [rec.config.hop_ms]),
    })
    if args.split == "validation":  # (on the test split it would invite choosing settings on the test)
        best = best_point(result["operating_curve"])
        result["best_by_f1"] = {"hop_ms": best["hop_ms"], "threshold": best["threshold"]}
    print(json.dumps(result, indent=1))
    if args.write_model:
        save_model(args.write_model, model, **result["best_by_f1"])
        print(f"wrote {args.write_model} (detector settings {result['best_by_f1']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
