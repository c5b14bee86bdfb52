"""Ship a trained checkpoint as the package's default model, with detector settings chosen on validation data.

    python pipelines/ship.py CHECKPOINT [--config configs/default.yaml] [--name default] [--hop-ms MS]
                             [--tune-model TUNING_CHECKPOINT --tune-config configs/tuning.yaml]

1. scores the checkpoint on the recipe's validation split (pipelines/validate.py), recorded in its `training`;
2. chooses its detector settings on validation streams:
   - a recipe with real validation speakers (data.real_commands_dir): pipelines/real_streams.py --split validation
     (real voices only, street noise at 10/5/0 dB) chooses the three sensitivity presets under its written rule
     (`choose_presets`) at the model's hop (`--hop-ms`, else the one it carries); `balanced` becomes the settings
     the model carries; the figures go to docs/real_streams_validation.json (docs/real_streams_validation_NAME.json
     for another --name);
   - otherwise the validation street recording of pipelines/stream_eval.py --split validation picks the hop and
     threshold (`best_point`: top F1, then the longest hop within 0.01 of it, then the highest threshold) over
     hops 50/80/100 ms (only `--hop-ms` when given) and thresholds 0.5–0.9, written to
     docs/stream_eval_validation[_NAME].json. With
     `--tune-model`, that sweep runs a model of the same recipe trained on a fold that leaves a real speaker for
     validation, whose settings the checkpoint (trained on every speaker) then carries;
3. writes drsn_asr/assets/NAME.pt carrying those settings and its SHA-256 into SHA256SUMS.
Nothing here reads a test set. Then re-run the model card's commands for its test figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr.runtime.checkpoint import ASSETS, build_model, read_checkpoint, save_model, sha256  # noqa: E402

THRESHOLDS = "0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9"
HOPS_MS = (50, 80, 100, 160)  # those that are whole numbers of the model's frames are swept (log-mel: 50/80/100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--name", default="default")
    parser.add_argument("--tune-model", default=None, help="choose the detector settings with this model (default: "
                        "CHECKPOINT) on the validation split of --tune-config")
    parser.add_argument("--tune-config", default=None, help="recipe of --tune-model (default: --config)")
    parser.add_argument("--hop-ms", type=float, default=None,
                        help="the hop the model carries, its presets chosen at it (default: the tuning model's own for "
                             "real-voice recipes, the sweep's choice otherwise); a whole number of the model's frames")
    args = parser.parse_args()
    tune_model, tune_config = args.tune_model or args.checkpoint, args.tune_config or args.config
    pipelines = REPO / "pipelines"
    tune_state = read_checkpoint(tune_model)
    real = bool(tune_state.get("training", {}).get("config", {}).get("data", {}).get("real_commands_dir"))
    suffix = "" if args.name == "default" else f"_{args.name}"
    tuning = build_model(tune_state, source=tune_model)
    frame_ms = tuning.features.hop_ms
    hops = ",".join(str(h) for h in HOPS_MS if h % frame_ms == 0 and (frame_ms > 10 or h <= 100)
                    and args.hop_ms in (None, h))  # (the sweep of a recipe without real validation speakers)
    if args.hop_ms is not None and (args.hop_ms % frame_ms or (not real and not hops)):
        parser.error(f"--hop-ms {args.hop_ms:g}: must be a whole number of the model's {frame_ms:g} ms frames"
                     + ("" if real else f" and one of the swept hops {HOPS_MS}"))
    presets = None
    with tempfile.TemporaryDirectory() as tmp:
        scores = Path(tmp) / "validation.json"
        subprocess.run([sys.executable, str(pipelines / "validate.py"), args.checkpoint, "--config", args.config,
                        "--json", str(scores)], check=True)
        validation = json.loads(scores.read_text())[args.checkpoint]
        if real:
            sweep = REPO / "docs" / f"real_streams_validation{suffix}.json"
            tuned = Path(tmp) / "tuned.pt"
            streams_model = tune_model
            if args.hop_ms is not None:  # the tuning model carrying that hop: real_streams computes at its hop
                streams_model = str(Path(tmp) / "at_hop.pt")
                presets_at_hop = {k: {**v, "hop_ms": args.hop_ms} for k, v in tuning.sensitivity.items()}
                save_model(streams_model, tuning, sensitivity=presets_at_hop, **{**tuning.detector, "hop_ms": args.hop_ms})
            subprocess.run([sys.executable, str(pipelines / "real_streams.py"), "--split", "validation", "--model",
                            streams_model, "--json", str(sweep), "--write-model", str(tuned), "--posteriors",
                            str(REPO / "runs" / "posteriors" / f"{args.name}_validation.npz")], check=True,
                           stdout=subprocess.DEVNULL)
            presets = build_model(read_checkpoint(tuned)).sensitivity
            settings = presets["balanced"]
            chosen_on = (f"pipelines/real_streams.py --split validation --model {tune_model}"
                         f"{'' if args.hop_ms is None else f' at hop_ms {args.hop_ms:g}'} ({sweep.name})")
        else:
            sweep = REPO / "docs" / f"stream_eval_validation{suffix}.json"
            subprocess.run([sys.executable, str(pipelines / "stream_eval.py"), "--split", "validation", "--model",
                            tune_model, "--config", tune_config, "--thresholds", THRESHOLDS, "--hops-ms", hops,
                            "--json", str(sweep)], check=True, stdout=subprocess.DEVNULL)
            settings = json.loads(sweep.read_text())["best_by_f1"]
            chosen_on = (f"pipelines/stream_eval.py --split validation --model {tune_model} --config {tune_config} "
                         f"({sweep.name})")
    model = build_model(read_checkpoint(args.checkpoint), source=args.checkpoint)
    model.training.update({
        "epoch": validation["epoch"], **{f"validation_{k}": v for k, v in validation.items() if k != "epoch"},
        "detector_chosen_on": chosen_on,
    })
    assets = REPO / "drsn_asr" / ASSETS
    out = assets / f"{args.name}.pt"
    save_model(out, model, sensitivity=presets, **settings)
    sums = assets / "SHA256SUMS"
    lines = [line for line in sums.read_text().splitlines() if line.strip() and line.split()[1] != out.name]
    sums.write_text("\n".join(sorted(lines + [f"{sha256(out)}  {out.name}"])) + "\n")
    print(f"wrote {out} (detector {settings}, validation score {validation['score']}) and {sums}")


if __name__ == "__main__":
    main()
