"""Real-speech detection benchmark: long streams of real voices over street noise at fixed SNRs.

    python pipelines/real_streams.py [--model M] [--split test] [--snrs 10,5,0] [--json OUT] [--plot OUT.png]
    python pipelines/real_streams.py --split validation --model CHECKPOINT --write-model OUT.pt

Every voice is a real person's; nothing is synthesized but the street. For each SNR two streams are built:
- `keywords`: every command and digit clip of the split's Speech Commands speakers, `--fsdd-takes` takes of each
  digit by the split's FSDD speaker, and all of the split's non-command speech, in random order with 1.2-2.2 s
  gaps. It gives keywords found (recall), substitutions, streaming F1 and latency (callback time minus the end
  of the word).
- `non_command`: the split's non-command speech alone (its speakers' other words and its sentences, those whose
  labels name no keyword). It gives false alarms per hour of real non-command speech.
Split `test`: the Speech Commands speakers of REAL_COMMANDS_TEST_PART, FSDD's theo and the held-out sentences; no
model is trained or tuned on them; the street holds sirens, a kind held out of training. Split `validation`: the
validation speakers, FSDD speaker(s) and sentences of the model's own recipe, and street noise of training kinds
only: the one on which detector settings may be chosen (`--write-model`).

Speech is levelled against a synthesized street (traffic, engines, road rumble, horns; pipelines/build_demo.py) at
exactly each SNR. The posteriors of each stream are computed once, with the model's hop and the streaming code
users run (a Recognizer, fed in 1 s blocks: the decisions are those of 10 ms chunks), and the decision rule is
replayed over them for each setting of the sweep (`--thresholds` × `--smoothings-ms` × `--peak-waits-ms` ×
`--unknown-before-max`), as many streams of one DecisionRule. A detection matches a spoken item when their centres are within `--tolerance-s`.

`--write-model` (validation only) chooses the three sensitivity presets under the rule of `choose_presets`, gives
`balanced` per-label thresholds when they pay (`label_thresholds`, `label_thresholds_pay`), and writes the model
with them; `balanced` becomes the settings a Recognizer uses by default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "pipelines"))

from build_demo import make_recording  # noqa: E402
from stream_eval import score  # noqa: E402

from drsn_asr import Recognizer, load_model  # noqa: E402
from drsn_asr.runtime.checkpoint import LoadedModel, save_model  # noqa: E402
from drsn_asr.runtime.config import DetectorConfig, from_dict  # noqa: E402
from drsn_asr.runtime.decision import DecisionRule, smoothing_classifications  # noqa: E402
from drsn_asr.runtime.stream import Detection, detector_config  # noqa: E402
from drsn_asr.training.data import (DIGIT_WORDS, REAL_COMMANDS_TEST_PART, Example, read_fsdd,  # noqa: E402
                                    read_real_commands, read_sentences)
from drsn_asr.training.train import DataConfig, sentence_exclusions  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.3 … 0.95
SMOOTHING_HOPS = (0, 1, 3, 5, 8)  # swept: DetectorConfig's smoothing (150 ms) and this many hops longer
PEAK_WAITS_MS = (200.0, 0.0)
UNKNOWN_BEFORE_MAX = (1.0, 0.6, 0.5, 0.4)  # the context check: off, and three strictnesses
MAX_LATENCY_S = 0.3  # the median latency a preset may have (issue 30's target)


def recipe_data(model: LoadedModel) -> DataConfig:
    """The data settings of the recipe the model was trained with (its checkpoint records them)."""
    recorded = model.training.get("config", {}).get("data")
    if recorded is None:
        raise ValueError(f"{model.source} records no training recipe: its validation split is unknown")
    return from_dict(DataConfig, recorded, prefix="data")


def split_speech(split: str, data: DataConfig, fsdd_takes: int, rng: np.random.Generator
                 ) -> tuple[list[Example], list[Example], list[str]]:
    """(keyword clips, other-word clips, sentence paths) of real speakers of `split`."""
    if split == "test":
        commands_part, fsdd_speakers, sentence_part = REAL_COMMANDS_TEST_PART, ("theo",), (0.9, 1.0)
    else:
        if not data.real_commands_dir:
            raise ValueError("the model's recipe validates on no real Speech Commands speakers "
                             "(data.real_commands_dir): there is no real validation split to stream")
        commands_part, fsdd_speakers = data.real_commands_validation_part, data.fsdd_validation_speakers
        sentence_part = data.sentences_validation_part
    commands = read_real_commands(SHARED / "speech-commands-v0.02-test", commands_part)
    keywords = [ex for ex in commands if ex.word in data.vocabulary]
    others = [ex for ex in commands if ex.word not in data.vocabulary and ex.word != "_silence_"]
    for speaker in fsdd_speakers:
        spoken = read_fsdd(SHARED / "fsdd" / "recordings", (speaker,))
        for digit in DIGIT_WORDS:
            takes = [ex for ex in spoken if ex.word == digit]
            keywords += [takes[i] for i in sorted(rng.choice(len(takes), min(fsdd_takes, len(takes)), replace=False))]
    sentences = sorted({ex.path for ex in read_sentences(SHARED / "command-sentences" / "clean", part=sentence_part,
                                                         exclude_words=sentence_exclusions(data))})
    return keywords, others, sentences


def build_streams(split: str, data: DataConfig, snrs_db: list[float], seed: int, fsdd_takes: int,
                  limit: int | None = None) -> list[dict]:
    """Per SNR a `keywords` and a `non_command` stream: {kind, snr_db, audio, truth}."""
    rng = np.random.default_rng(seed)
    keywords, others, sentences = split_speech(split, data, fsdd_takes, rng)
    if limit:
        keywords = [keywords[i] for i in sorted(rng.choice(len(keywords), min(limit, len(keywords)), replace=False))]
        others, sentences = others[: max(1, limit // 8)], sentences[: max(1, limit // 16)]
    streams = []
    for snr in snrs_db:
        for kind, words in (("keywords", keywords), ("non_command", [])):
            audio, truth = make_recording(words, sentences, rng, others=others, sirens=split == "test",
                                          snrs_db=(snr,))
            streams.append({"kind": kind, "snr_db": snr, "audio": audio, "truth": truth})
    return streams


def posteriors(model: LoadedModel, audio: np.ndarray, hop_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """(stream times in s, posteriors) of every classification a Recognizer makes on `audio`, flush included."""
    rec = Recognizer(model, hop_ms=hop_ms)
    times, probs = [], []
    rec._bank.on_classified = lambda slots, now_s, p: (times.append(now_s.copy()), probs.append(p.copy()))
    for start in range(0, len(audio), 16000):
        rec.feed(audio[start : start + 16000])
    rec.flush()
    return np.concatenate(times), np.concatenate(probs)


def replay(labels: list[str], configs: list[DetectorConfig], times: np.ndarray, probs: np.ndarray,
           window_s: float) -> list[list[tuple[Detection, float]]]:
    """The detections (with emission times) the decision rule makes on recorded posteriors under each config.
    Configs that differ only in thresholds share one DecisionRule, one stream (slot) each. A detection spans
    the window it was emitted on, as a Recognizer's of a speech-embedding model does."""
    out: list[list[tuple[Detection, float]]] = [[] for _ in configs]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(repr(replace(c, threshold=0.0, thresholds={})), []).append(i)
    for members in groups.values():
        rule = DecisionRule(labels, configs[members[0]], len(members))
        slots = np.arange(len(members))
        for row, i in enumerate(members):
            c = configs[i]
            rule.set_thresholds(slots[row : row + 1], {k: c.thresholds.get(l, c.threshold) for k, l in enumerate(labels)})
        for now_s, p in zip(times, probs):
            emit, label, peak = rule.step(slots, np.full(len(members), now_s), np.broadcast_to(p, (len(members), len(p))).copy())
            for row, k, s in zip(emit.tolist(), label.tolist(), peak.tolist()):
                det = Detection(labels[k], round(s, 4), round(max(0.0, now_s - window_s), 3), round(float(now_s), 3))
                out[members[row]].append((det, float(now_s)))
    return out


def measure(detections: list[tuple[Detection, float]], stream: dict, tolerance_s: float) -> dict:
    """The figures of one stream under one setting (see the module docstring)."""
    duration_s = len(stream["audio"]) / 16000
    r = score(detections, stream["truth"], duration_s, tolerance_s)
    if stream["kind"] == "non_command":
        return {"false_alarms": r["false_alarms"], "false_alarms_per_hour": r["false_alarms_per_hour"]}
    out = {k: r[k] for k in ("n_keywords", "recall", "substitutions", "f1", "false_alarms", "latency_s_median")}
    for group, is_digit in (("commands", False), ("digits", True)):  # recall of each group alone
        truth = [w for w in stream["truth"] if w["label"] == "_unknown_" or (w["label"] in DIGIT_WORDS) == is_digit]
        out[f"recall_{group}"] = score(detections, truth, duration_s, tolerance_s)["recall"]
    return out


def record_posteriors(model: LoadedModel, streams: list[dict], hop_ms: float, cache: Path | None = None) -> None:
    """Each stream's (times, posteriors) into stream["posteriors"]; with `cache` (an .npz), read from it when it
    was written for the same weights, hop and streams, else computed and written there."""
    key = hashlib.sha256()
    for name, tensor in sorted(model.net.state_dict().items()):
        key.update(name.encode() + tensor.cpu().numpy().tobytes())
    key.update(repr(hop_ms).encode())
    for stream in streams:
        key.update(stream["audio"].tobytes())
    key = key.hexdigest()
    if cache is not None and cache.is_file():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            for i, stream in enumerate(streams):
                stream["posteriors"] = (stored[f"times_{i}"], stored[f"probs_{i}"])
            return
    for stream in streams:
        stream["posteriors"] = posteriors(model, stream["audio"], hop_ms)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{what}_{i}": s["posteriors"][j] for i, s in enumerate(streams)
                  for j, what in enumerate(("times", "probs"))}
        np.savez(cache, key=np.array(key), **arrays)


def evaluate_settings(model: LoadedModel, streams: list[dict], configs: list[DetectorConfig],
                      tolerance_s: float) -> list[dict]:
    """Per config: its figures at each SNR and their means over SNRs (posteriors recorded first if need be)."""
    window_s = model.net.config.window_s
    results = [{"settings": _settings(c), "by_snr": {}} for c in configs]
    if any("posteriors" not in s for s in streams):
        record_posteriors(model, streams, configs[0].hop_ms)
    for stream in streams:
        found = replay(model.labels, configs, *stream["posteriors"], window_s)
        for result, detections in zip(results, found):
            result["by_snr"].setdefault(str(stream["snr_db"]), {}).update(
                {(k if stream["kind"] == "keywords" else f"non_command_{k}"): v
                 for k, v in measure(detections, stream, tolerance_s).items()})
    for result in results:
        per = list(result["by_snr"].values())
        result["mean"] = {k: round(float(np.mean([p[k] for p in per if p.get(k) is not None])), 4)
                          for k in ("recall", "recall_commands", "recall_digits", "f1", "substitutions",
                                    "non_command_false_alarms_per_hour", "latency_s_median")
                          if any(p.get(k) is not None for p in per)}
    return results


def _settings(c: DetectorConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()
            if k in ("hop_ms", "smoothing_ms", "peak_wait_ms", "unknown_before_max", "before_span_ms", "threshold",
                     "thresholds")}  # (even when empty: the JSON then says what each setting used)


def choose_presets(curve: list[dict], max_latency_s: float = MAX_LATENCY_S) -> dict[str, dict]:
    """The rule (docs/experiments/real_streams.md, written before any figure, amended once before the extended
    sweep's figures), on means over the validation SNRs, among the settings whose median latency is at most
    `max_latency_s` (all of them when none is):
    - balanced: the setting of highest streaming F1;
    - few_false_alarms: of the settings with at most a quarter of balanced's false alarms per hour of non-command
      speech, the one that finds the most keywords (the one with the fewest false alarms when none has so few);
    - find_everything: of the settings with at most three times balanced's false alarms per hour, the one that
      finds the most keywords.
    Ties go to the higher threshold, then the longer smoothing, then the shorter peak wait, then the stricter
    context check."""
    fast = [p for p in curve if (p["mean"].get("latency_s_median") or 0) <= max_latency_s] or curve
    key = lambda p, *first: (*first, p["settings"]["threshold"], p["settings"]["smoothing_ms"],  # noqa: E731
                             -p["settings"].get("peak_wait_ms", 0), -p["settings"].get("unknown_before_max", 1))
    balanced = max(fast, key=lambda p: key(p, p["mean"]["f1"]))
    fa = balanced["mean"]["non_command_false_alarms_per_hour"]
    few = [p for p in fast if p["mean"]["non_command_false_alarms_per_hour"] <= fa / 4]
    few_pick = (max(few, key=lambda p: key(p, p["mean"]["recall"])) if few else
                min(fast, key=lambda p: (p["mean"]["non_command_false_alarms_per_hour"], -p["mean"]["recall"])))
    loose = [p for p in fast if p["mean"]["non_command_false_alarms_per_hour"] <= 3 * fa]
    everything = max(loose, key=lambda p: key(p, p["mean"]["recall"]))
    return {"few_false_alarms": few_pick["settings"], "balanced": balanced["settings"],
            "find_everything": everything["settings"]}


def label_thresholds(model: LoadedModel, streams: list[dict], config: DetectorConfig, tolerance_s: float,
                     thresholds: list[float]) -> tuple[dict[str, float], dict, dict]:
    """Per-label thresholds (docs/experiments/real_streams.md, amendment 3): each keyword's threshold swept alone,
    the others at `config.threshold`; each label takes its threshold of highest F1 (ties: the nearest to the
    common one). Returns (thresholds, figures without, figures with them)."""
    keywords = [label for label in model.labels if not label.startswith("_")]
    configs = [replace(config, thresholds={label: t}) for label in keywords for t in thresholds]
    swept = evaluate_settings(model, streams, configs, tolerance_s)
    chosen = {}
    for i, label in enumerate(keywords):
        part = swept[i * len(thresholds) : (i + 1) * len(thresholds)]
        best = max(range(len(thresholds)), key=lambda j: (part[j]["mean"]["f1"], -abs(thresholds[j] - config.threshold)))
        chosen[label] = thresholds[best]
    without, with_them = evaluate_settings(model, streams, [config, replace(config, thresholds=chosen)], tolerance_s)
    return chosen, without, with_them


def label_thresholds_pay(without: dict, with_them: dict) -> bool:
    """Amendment 3's rule: validation F1 up by 0.01 or more, false alarms per hour of non-command speech not up."""
    return (with_them["mean"]["f1"] >= without["mean"]["f1"] + 0.01 and with_them["mean"][
        "non_command_false_alarms_per_hour"] <= without["mean"]["non_command_false_alarms_per_hour"])


def family(curve: list[dict], settings: dict) -> list[dict]:
    """The points of `curve` with `settings` but for the threshold(s) (the common one swept), by threshold."""
    same = lambda p: all(p["settings"].get(k) == v for k, v in settings.items()  # noqa: E731
                         if k not in ("threshold", "thresholds"))
    return sorted((p for p in curve if same(p)), key=lambda p: p["settings"]["threshold"])


def summary(result: dict) -> dict:
    """`result` without most of its sweep: the threshold sweeps through the carried settings and the presets, and
    for each other family (smoothing × peak wait × context check) its most keywords found at no more false alarms
    per hour than the carried settings make."""
    out = {k: v for k, v in result.items() if k != "curve"}
    kept = [p for s in [result["carried"], *result.get("presets", {}).values(), *([result["before"]] if "before" in result else [])]
            for p in family(result["curve"], s["settings"])]
    out["curve"] = list({json.dumps(p["settings"], sort_keys=True): p for p in kept}.values())
    budget = result["carried"]["mean"]["non_command_false_alarms_per_hour"]
    best = {}
    for p in result["curve"]:
        name = json.dumps({k: v for k, v in p["settings"].items() if k != "threshold"}, sort_keys=True)
        if p["mean"]["non_command_false_alarms_per_hour"] <= budget and (
                name not in best or p["mean"]["recall"] > best[name]["mean"]["recall"]):
            best[name] = {"settings": p["settings"], "mean": p["mean"]}
    out["best_at_carried_false_alarms"] = {"false_alarms_per_hour": budget, "by_family": sorted(
        best.values(), key=lambda p: -p["mean"]["recall"])}
    return out


def plot(result: dict, out: Path) -> None:
    """Keywords found against false alarms per hour of non-command speech, one colour per SNR: the threshold
    sweep of the `balanced` preset's other settings (solid; circles: the presets), and of the settings the model
    carried before (dashed), where they differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = result.get("presets", {})
    solid = family(result["curve"], presets["balanced"]["settings"]) if "balanced" in presets else []
    dashed = family(result["curve"], result.get("before", result["carried"])["settings"])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for snr in result["snrs_db"]:
        at = lambda p: (max(p["by_snr"][str(snr)]["non_command_false_alarms_per_hour"], 0.5),  # noqa: E731
                        100 * p["by_snr"][str(snr)]["recall"])
        line, = ax.plot(*zip(*map(at, solid or dashed)), marker=".", label=f"{snr:g} dB")
        if solid and dashed != solid:
            ax.plot(*zip(*map(at, dashed)), ls="--", lw=0.9, color=line.get_color())
        for preset in presets.values():
            ax.plot(*at(preset), "o", mfc="none", color=line.get_color(), ms=9)
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour of real non-command speech (0 drawn at 0.5)")
    ax.set_ylabel("real keywords found (%)")
    ax.set_title(f"{result['model']}: {result['split']} speakers, street noise; threshold sweep\n"
                 "solid: the balanced preset's other settings, one threshold for all (circles: the three presets); "
                 "dashed: before", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--snrs", default="10,5,0", help="SNRs in dB of the speech against the street")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--smoothings-ms", default=None,
                        help="smoothings to sweep (default: 150 ms, and 1, 3, 5 and 8 hops longer)")
    parser.add_argument("--peak-waits-ms", default=",".join(f"{w:g}" for w in PEAK_WAITS_MS),
                        help="peak waits to sweep (how long a detection may wait for its score's peak)")
    parser.add_argument("--unknown-before-max", default=",".join(f"{u:g}" for u in UNKNOWN_BEFORE_MAX),
                        help="context checks to sweep (DetectorConfig.unknown_before_max; 1 is off)")
    parser.add_argument("--fsdd-takes", type=int, default=10, help="takes of each digit by the FSDD speaker")
    parser.add_argument("--limit", type=int, default=None, help="at most this many keywords (a quick check)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--tolerance-s", type=float, default=0.75)
    parser.add_argument("--json", default=None, help="the figures of the carried settings and the presets, the threshold "
                        "sweeps through them, and the best setting of each family of the sweep")
    parser.add_argument("--full-json", default=None, help="every setting of the sweep")
    parser.add_argument("--before", default=None, metavar="K=V,...",
                        help="also measure these detector settings (e.g. the ones shipped before) and draw their "
                             "threshold sweep dashed: smoothing_ms=150,peak_wait_ms=200,unknown_before_max=1,threshold=0.85")
    parser.add_argument("--plot", default=None, metavar="OUT.png")
    parser.add_argument("--posteriors", default=None, metavar="FILE.npz",
                        help="keep the streams' posteriors here, and reuse them when weights and streams are the same")
    parser.add_argument("--write-model", default=None, metavar="OUT.pt",
                        help="validation only: write the model carrying the presets chosen by choose_presets (balanced with "
                             "per-label thresholds when they pay)")
    args = parser.parse_args()
    if args.write_model and args.split != "validation":
        parser.error("--write-model chooses settings: only on --split validation")
    model = load_model(args.model, device="cpu")
    carried = detector_config(model)
    # the sweep is the same whatever settings the model carries now (so that shipping it again chooses again)
    n_smooth = smoothing_classifications(replace(carried, smoothing_ms=DetectorConfig.smoothing_ms))
    smoothings = ([float(s) for s in args.smoothings_ms.split(",")] if args.smoothings_ms else
                  [DetectorConfig.smoothing_ms] + [(n_smooth + k) * carried.hop_ms for k in SMOOTHING_HOPS[1:]])
    configs = [from_dict(DetectorConfig, {**asdict(carried), "smoothing_ms": s, "peak_wait_ms": float(w),
                                          "unknown_before_max": float(u), "threshold": float(t), "thresholds": {}})
               for s in smoothings for w in args.peak_waits_ms.split(",") for u in args.unknown_before_max.split(",")
               for t in args.thresholds.split(",")]
    snrs = [float(s) for s in args.snrs.split(",")]
    streams = build_streams(args.split, recipe_data(model), snrs, args.seed, args.fsdd_takes, args.limit)
    record_posteriors(model, streams, carried.hop_ms, Path(args.posteriors) if args.posteriors else None)
    result = {
        "model": model.source, "split": args.split, "snrs_db": snrs, "seed": args.seed, "hop_ms": carried.hop_ms,
        "model_smoothing_ms": carried.smoothing_ms,
        "streams": [{"kind": s["kind"], "snr_db": s["snr_db"], "duration_s": round(len(s["audio"]) / 16000, 1),
                     "n_keywords": sum(w["label"] != "_unknown_" for w in s["truth"]),
                     "n_non_command": sum(w["label"] == "_unknown_" for w in s["truth"])} for s in streams],
        "curve": evaluate_settings(model, streams, configs, args.tolerance_s),
    }
    presets = choose_presets(result["curve"]) if args.write_model else model.sensitivity
    if args.write_model:
        balanced = from_dict(DetectorConfig, {**asdict(carried), **presets["balanced"]})
        chosen, without, with_them = label_thresholds(model, streams, balanced, args.tolerance_s,
                                                      [float(t) for t in args.thresholds.split(",")])
        pays = label_thresholds_pay(without, with_them)
        result["label_thresholds"] = {"thresholds": chosen, "without": without["mean"], "with": with_them["mean"],
                                      "shipped": pays}
        if pays:
            presets["balanced"] = {**presets["balanced"], "thresholds": chosen}
    named = {name: from_dict(DetectorConfig, {**asdict(carried), **s}) for name, s in presets.items()}
    named["carried"] = carried
    figures = evaluate_settings(model, streams, list(named.values()), args.tolerance_s)
    result["carried"] = figures[-1]
    result["presets"] = dict(zip(list(named)[:-1], figures[:-1]))
    if args.before:
        before = from_dict(DetectorConfig, {**asdict(carried), "thresholds": {}, **{k: float(v) for k, v in (
            item.split("=") for item in args.before.split(","))}})
        result["before"], = evaluate_settings(model, streams, [before], args.tolerance_s)
        result["curve"] += evaluate_settings(model, streams, [replace(before, threshold=float(t)) for t in
                                                              args.thresholds.split(",")], args.tolerance_s)
    print(json.dumps({"carried": result["carried"]["mean"], **({"before": result["before"]["mean"]} if args.before else {}),
                      **{n: {**p["settings"], **p["mean"]} for n, p in result["presets"].items()}}, indent=1))
    if args.full_json:
        Path(args.full_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.full_json).write_text(json.dumps(result))
    if args.plot:
        plot(result, Path(args.plot))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary(result), indent=1))
    if args.write_model:
        model.training["sensitivity_chosen_on"] = (f"pipelines/real_streams.py --split validation --model "
                                                    f"{args.model} (choose_presets)")
        save_model(args.write_model, model, sensitivity=presets, **presets["balanced"])
        print(f"wrote {args.write_model} with presets {presets}")


if __name__ == "__main__":
    main()
