"""Judge a recipe change over several seeds: a control arm of training runs against a treatment arm.

    python pipelines/experiments/seed_trial.py --control runs/r1_control runs/r1_seed1 runs/r1_seed2 \\
        --treatment runs/u_seed0 runs/u_seed1 runs/u_seed2 [--json OUT]

One run of the tuning recipe moves a real voice's figures by up to 5 points from seed to seed, so a change is
judged on means over seeds. For each run directory (the `out_dir` of `drsn-asr train`) this evaluates `best.pt` on the real validation voice (`--data`, from `pipelines/build_testset.py
--split validation`), clean and with `--noise-dir` mixed in at each `--snr`, at a fixed detector setting
(`--hop-ms`, `--threshold`), and takes:

- the real voice's mean keyword accuracy over the conditions (clean and every SNR);
- the clean `_unknown_` rejection of the real sentences in `--data`;
- the validation score `best.pt` was kept for (held-out TTS voices, as training picks its best epoch).

With fewer than `--min-seeds` runs in an arm (default 2, the least that has a spread) the runs are scored and
recorded with `--json` but not judged, so the seeds of a trial can be trained over several sessions.
The treatment passes when its arm's mean gain is at least `--min-gain` and at least twice the standard error
of the difference of the two means, its mean rejection is at least `--min-rejection`, and its mean
validation score is no more than `--max-score-drop` below the control's. Each run's evaluation is kept in
RUN/seed_trial_eval.json with the settings, data and checkpoint it used, and reused while all three match (the
data by its fingerprint, wherever it lies). Records name data folders inside the repository relative to it.

A run already judged in an earlier trial can join an arm as `TRIAL.json:RUN` (TRIAL.json written by `--json`,
RUN as named there), so control seeds need not be trained again once their weights are gone. Its figures are
used only if they were measured at the same settings on the same data (the SHA-256 of every file under
`--data` and `--noise-dir`); whether the recipe itself reproduces on another checkout or host is for the trial's
author to have checked (docs/experiments/validation_tuning_fold.json, "R1c again"). The runs of one arm must have trained on the
same examples and noise recordings (the `examples_sha256` and `noise_files_sha256` that `drsn-asr train` records
in its checkpoints); whether the two arms did is printed and recorded, as a trial may judge a change of data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drsn_asr.runtime.checkpoint import read_checkpoint, sha256  # noqa: E402
from drsn_asr.training.data import folder_fingerprint as fingerprint  # noqa: E402
from drsn_asr.tools.evaluate import evaluate  # noqa: E402

EVAL_FILE = "seed_trial_eval.json"
PATH_SETTINGS = ("data", "noise_dir")  # where the data lay; the rest (fingerprints included) must match in a record


def shown(path: str | Path) -> str:
    """`path` as a record keeps it: relative to the repository when it lies inside, so a record reads the same on
    every checkout; absolute otherwise."""
    resolved = Path(path).resolve()
    return resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else str(resolved)


def _differing(a: dict, b: dict) -> list[str]:
    """The settings in which `a` and `b` measure differently: all but where the data lay (their fingerprints say
    what it was)."""
    return sorted(k for k in a.keys() | b.keys() if k not in PATH_SETTINGS and a.get(k) != b.get(k))


def _evaluate_run(run: Path, settings: dict) -> dict:
    """The run's best.pt on the real validation voice, without per-clip predictions (cached in the run)."""
    cached = run / EVAL_FILE
    checkpoint_sha256 = sha256(run / "best.pt")
    if cached.is_file():
        kept = json.loads(cached.read_text())
        if not _differing(kept.get("settings", {}), settings) and kept.get("checkpoint_sha256") == checkpoint_sha256:
            return kept
    import torch

    torch.set_num_threads(1)
    result = evaluate(REPO / settings["data"], model=str(run / "best.pt"), noise_dir=REPO / settings["noise_dir"],
                      snrs_db=settings["snrs_db"], seed=settings["seed"], device="cpu",
                      detector={"hop_ms": settings["hop_ms"], "threshold": settings["threshold"]})
    if result["unknown_rejection"] is None:
        raise SystemExit(f"{settings['data']} holds no clips of words outside the vocabulary: the rejection check "
                         "needs some (pipelines/build_testset.py --split validation puts real sentences there)")
    kept = {"settings": settings, "checkpoint_sha256": checkpoint_sha256,
            "keyword_accuracy": {"clean": result["keyword_accuracy"],
                                 **{k: r["keyword_accuracy"] for k, r in result.get("by_snr", {}).items()}},
            "unknown_rejection_clean": result["unknown_rejection"],
            "per_class_clean": result["per_class"]}
    cached.write_text(json.dumps(kept, indent=1) + "\n")
    return kept


# the fingerprints `drsn-asr train` records of its data: the record's key, what it names, and how the data was used
FINGERPRINTS = {"examples_sha256": ("same_examples", "examples", "trained on", "data"),
                "noise_files_sha256": ("same_noise_files", "noise recordings", "mixed in", "noise")}


def data_check(arms: dict[str, list[str | None]], what: str = "examples") -> bool | None:
    """Whether both arms trained on the same `what`, from each run's fingerprint of it (one of FINGERPRINTS;
    None for a run whose training recorded none, and then the answer is None); SystemExit when runs of one arm
    record different ones, as seeds of one recipe must see the same data."""
    known = {}
    for name, runs in arms.items():
        digests = {d for d in runs if d}
        if len(digests) > 1:
            raise SystemExit(f"the {name} runs were trained on different {what} ({len(digests)} fingerprints): "
                             "seeds of one recipe must see the same data; rebuild it as it was and train again")
        known[name] = digests.pop() if digests and all(runs) else None
    if None in known.values():
        return None
    return len(set(known.values())) == 1


def validation_score(run: Path) -> float:
    """The validation score training recorded in best.pt when it kept those weights (its best epoch's)."""
    score = read_checkpoint(run / "best.pt")["training"].get("validation_score")
    if score is None:
        raise ValueError(f"{run}/best.pt records no validation_score: train it with drsn-asr train on a recipe "
                         "that has a validation split")
    return score


def _is_record(item: str) -> bool:
    """Whether an arm's item names a run of an earlier trial's --json (TRIAL.json:RUN) rather than a run folder."""
    path, sep, name = item.rpartition(":")
    return bool(sep and name) and path.endswith(".json")


def recorded_run(item: str, settings: dict) -> dict:
    """The figures of `TRIAL.json:RUN` from an earlier trial's --json, or SystemExit saying why they cannot serve."""
    path, _, name = item.rpartition(":")
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{item}: cannot read {path} ({e}); pass TRIAL.json:RUN with TRIAL.json written by --json")
    if name not in record.get("runs", {}):
        raise SystemExit(f"{item}: {path} records no run {name!r}; it records {', '.join(record.get('runs', {}))}")
    run = record["runs"][name]
    differ = _differing(run.get("settings", {}), settings)
    if differ:
        raise SystemExit(f"{item} was measured with other settings or data ({', '.join(differ)} differ): rebuild the "
                         "data as it was and pass the same settings, or train the run again")
    return run


def judge(control: list[dict], treatment: list[dict], min_gain: float, min_rejection: float,
          max_score_drop: float) -> dict:
    """The arms' means and spreads and the verdict; each run is {"mean": …, "rejection": …, "score": …}."""
    if len(control) < 2 or len(treatment) < 2:
        raise ValueError("each arm needs at least two runs (seeds) to have a spread")

    def arm(runs: list[dict]) -> dict:
        means = [r["mean"] for r in runs]
        return {"mean": statistics.mean(means), "sd": statistics.stdev(means),
                "range": max(means) - min(means), "rejection": statistics.mean(r["rejection"] for r in runs),
                "score": statistics.mean(r["score"] for r in runs), "n": len(runs)}

    c, t = arm(control), arm(treatment)
    gain = t["mean"] - c["mean"]
    se = math.sqrt(c["sd"] ** 2 / c["n"] + t["sd"] ** 2 / t["n"])
    checks = {
        f"gain >= {min_gain:g}": gain >= min_gain,
        "gain >= 2 standard errors": gain >= 2 * se,
        f"rejection >= {min_rejection:g}": t["rejection"] >= min_rejection,
        f"validation score drop <= {max_score_drop:g}": c["score"] - t["score"] <= max_score_drop,
    }
    return {"control": c, "treatment": t, "gain": gain, "standard_error": se, "checks": checks,
            "passes": all(checks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control", nargs="+", required=True,
                        help="run directories of the recipe, or TRIAL.json:RUN for a run an earlier trial recorded")
    parser.add_argument("--treatment", nargs="+", required=True, help="run directories of the change (or TRIAL.json:RUN)")
    parser.add_argument("--data", default=str(REPO / "data" / "validation" / "real"))
    parser.add_argument("--noise-dir", default=str(REPO / "data" / "validation" / "noise"))
    parser.add_argument("--snr", default="20,10,5,0,-5", help="comma-separated SNRs in dB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise choice and placement")
    parser.add_argument("--hop-ms", type=float, default=50.0)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--min-gain", type=float, default=0.01)
    parser.add_argument("--min-rejection", type=float, default=0.95)
    parser.add_argument("--max-score-drop", type=float, default=0.01)
    parser.add_argument("--min-seeds", type=int, default=2,
                        help="runs each arm needs for a verdict; with fewer the runs are scored and recorded only")
    parser.add_argument("--workers", type=int, default=2, help="runs evaluated at once, one thread each")
    parser.add_argument("--json", type=Path, help="write the figures and the verdict here")
    args = parser.parse_args()
    if args.min_seeds < 2:
        parser.error("--min-seeds must be at least 2: an arm of one run has no spread to judge a gain against")
    runs = args.control + args.treatment
    trained = [r for r in runs if not _is_record(r)]
    for run in map(Path, trained):
        if not (run / "best.pt").is_file():
            parser.error(f"{run}: no best.pt there; pass the out_dir of a finished training run, or TRIAL.json:RUN")
    settings = {"data": shown(args.data), "noise_dir": shown(args.noise_dir),
                "data_sha256": fingerprint(Path(args.data)), "noise_sha256": fingerprint(Path(args.noise_dir)),
                "snrs_db": [float(s) for s in args.snr.split(",")], "seed": args.seed, "hop_ms": args.hop_ms,
                "threshold": args.threshold}
    recorded = {r: recorded_run(r, settings) for r in runs if _is_record(r)}
    training = {r: recorded[r] if r in recorded else read_checkpoint(Path(r) / "best.pt")["training"] for r in runs}
    digests = {r: {key: training[r].get(key) for key in FINGERPRINTS} for r in runs}
    same = {key: data_check({arm: [digests[r][key] for r in getattr(args, arm)] for arm in ("control", "treatment")},
                            FINGERPRINTS[key][1]) for key in FINGERPRINTS}
    with ProcessPoolExecutor(args.workers) as pool:
        evaluations = dict(zip(trained, pool.map(_evaluate_run, map(Path, trained), [settings] * len(trained))))
    figures = {}
    for run in runs:
        if run in recorded:
            figures[run] = recorded[run]
            continue
        ev = evaluations[run]
        accuracies = list(ev["keyword_accuracy"].values())
        figures[run] = {"keyword_accuracy": ev["keyword_accuracy"], "mean": statistics.mean(accuracies),
                        "rejection": ev["unknown_rejection_clean"], "score": validation_score(Path(run)),
                        "checkpoint_sha256": ev["checkpoint_sha256"], "settings": settings,
                        **digests[run]}
    conditions = list(figures[runs[0]]["keyword_accuracy"])
    print("run".ljust(28) + "".join(c.rjust(7) for c in conditions) + "   mean  reject  score")
    for run in runs:
        f = figures[run]
        print(run.ljust(28) + "".join(f"{v:7.3f}" for v in f["keyword_accuracy"].values())
              + f"  {f['mean']:.4f}  {f['rejection']:.3f}  {f['score']:.4f}")
    for key, (_, what, used, change) in FINGERPRINTS.items():
        print({True: f"both arms {used} the same {what}",
               False: f"the arms {used} different {what}: the trial judges a change of {change} as well",
               None: f"not checked whether the arms {used} the same {what}: some runs record no {key} "
                     "(trained before drsn-asr recorded it)"}[same[key]])
    record = {"settings": settings, "arms": {"control": args.control, "treatment": args.treatment},
              **{FINGERPRINTS[key][0]: same[key] for key in FINGERPRINTS}, "runs": figures}
    if min(len(args.control), len(args.treatment)) < args.min_seeds:
        print(f"no verdict: each arm needs {args.min_seeds} runs (seeds) and has {len(args.control)} and "
              f"{len(args.treatment)}; keep these figures with --json and add them to a later trial as TRIAL.json:RUN")
        if args.json:
            args.json.write_text(json.dumps({**record, "passes": None}, indent=1) + "\n")
        return
    verdict = judge([figures[r] for r in args.control], [figures[r] for r in args.treatment],
                    args.min_gain, args.min_rejection, args.max_score_drop)
    for name in ("control", "treatment"):
        a = verdict[name]
        print(f"{name}: mean {a['mean']:.4f} (sd {a['sd']:.4f}, range {a['range']:.4f}), rejection "
              f"{a['rejection']:.3f}, validation score {a['score']:.4f}")
    print(f"gain {verdict['gain']:+.4f}, standard error {verdict['standard_error']:.4f}")
    for check, ok in verdict["checks"].items():
        print(f"  {'pass' if ok else 'FAIL'}  {check}")
    print("the treatment passes" if verdict["passes"] else "the treatment does not pass")
    if args.json:
        args.json.write_text(json.dumps({**record, **verdict}, indent=1) + "\n")


if __name__ == "__main__":
    main()
