"""The seed's claim, tested: DRSN-CW vs DRSN-CS vs plain ResNet vs SE-ResNet, same data, budget and seed.

    python pipelines/ablation.py [--config configs/default.yaml] [--parallel 2] [--skip-train]

1. trains the four backbones from one recipe (only `model.block` differs), `--parallel` at a time, each on
   `threads` CPU threads (or the GPU when there is one), into runs/ablation/<block>/;
2. copies each best checkpoint to models/ablation/<block>.pt;
3. evaluates all four on the held-out real test set (pipelines/build_testset.py) clean and with held-out
   noise at 20, 10, 5, 0, -5 dB, and writes docs/ablation.md (table) and docs/ablation_snr.png (plot).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr.evaluate import evaluate  # noqa: E402
from drsn_asr.report import plot_results, snr_table  # noqa: E402
from drsn_asr.train import load_train_config, prepare_data  # noqa: E402

BLOCKS = ("drsn_cw", "drsn_cs", "resnet", "se_resnet")
SNRS_DB = [20.0, 10.0, 5.0, 0.0, -5.0]


def train_all(config: Path, parallel: int, threads: int, epochs: int | None) -> None:
    prepare_data(load_train_config(config), REPO)  # build the shared cache once, before the runs race for it
    pending = list(BLOCKS)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < parallel:
            block = pending.pop(0)
            log = open(REPO / "runs" / f"ablation_{block}.log", "w")
            cmd = [sys.executable, "-c", (
                "import sys; from pathlib import Path; from drsn_asr.train import load_train_config, train; "
                f"cfg = load_train_config({str(config)!r}, {{'model': {{'block': {block!r}}}, "
                f"'optim': {{'threads': {threads}{', ' + repr('epochs') + ': ' + str(epochs) if epochs else ''}}}, "
                f"'out_dir': 'runs/ablation/{block}'}}); train(cfg, Path({str(REPO)!r}), progress=True)")]
            running.append((block, subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)))
            print(f"training {block} (log: runs/ablation_{block}.log)", flush=True)
        block, proc = running[0]
        if proc.wait() != 0:
            raise SystemExit(f"training {block} failed: see runs/ablation_{block}.log")
        running.pop(0)
        print(f"trained {block}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs for all four")
    parser.add_argument("--skip-train", action="store_true", help="only evaluate models/ablation/*.pt")
    parser.add_argument("--testset", default=str(REPO / "data" / "testset"))
    args = parser.parse_args()
    (REPO / "runs").mkdir(exist_ok=True)
    if not args.skip_train:
        train_all(Path(args.config), args.parallel, args.threads, args.epochs)
        (REPO / "models" / "ablation").mkdir(parents=True, exist_ok=True)
        for block in BLOCKS:
            shutil.copyfile(REPO / "runs" / "ablation" / block / "best.pt", REPO / "models" / "ablation" / f"{block}.pt")
    results = {}
    for block in BLOCKS:
        model = REPO / "models" / "ablation" / f"{block}.pt"
        result = evaluate(Path(args.testset) / "real", model=str(model), noise_dir=Path(args.testset) / "noise",
                          snrs_db=SNRS_DB, seed=0, device="cpu")
        results[block] = {k: v for k, v in result.items() if k != "predictions"}
        for r in results[block].get("by_snr", {}).values():
            r.pop("predictions", None)
        print(f"evaluated {block}: clean keyword accuracy {result['keyword_accuracy']:.3f}", flush=True)
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "ablation.json").write_text(json.dumps(results, indent=1))
    plot_dir = docs / "ablation_plots"
    plot_results(results, plot_dir)
    table = snr_table(results)
    (docs / "ablation.md").write_text(
        "# Ablation: does shrinkage help in street noise?\n\n"
        "Four backbones trained from `configs/default.yaml` with only `model.block` changed (same data, budget,\n"
        "seed), evaluated on a held-out real speaker (FSDD theo digits; held-out command sentences as\n"
        "`_unknown_`; `_silence_` clips of held-out noise), clean and with held-out noise (kitchen, running tap,\n"
        "synthesized sirens and wind — none of it in training) mixed at each SNR on the active speech.\n\n"
        "Keyword accuracy (and unknown rejection, clean):\n\n" + table + "\n\n"
        "![accuracy vs SNR](ablation_plots/accuracy_vs_snr.png)\n\n"
        "Produced by:\n\n```sh\npython pipelines/build_testset.py\npython pipelines/ablation.py\n```\n"
        "Re-run the evaluation of any one model with\n"
        "`drsn-asr evaluate data/testset/real --model models/ablation/drsn_cw.pt --noise-dir data/testset/noise "
        "--snr 20,10,5,0,-5 --seed 0`.\n"
    )
    print(table)


if __name__ == "__main__":
    main()
