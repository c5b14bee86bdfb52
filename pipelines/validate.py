"""Score checkpoints on a recipe's validation split, as training picks its best epoch (train.evaluate_split).

    python pipelines/validate.py [--config configs/default.yaml] CHECKPOINT [CHECKPOINT ...] [--json OUT]

For each checkpoint (a path, or a shipped model name): accuracy, keyword accuracy, rejection (non-keyword
examples given `_unknown_` or `_silence_`) and the score (the mean of the last two), on the recipe's validation
examples with its noise mixed in by the fixed generator training uses. A `last.pt` written with
`optim.ema_decay` is scored twice: its last weights and their average. Nothing here is a test set: choosing
between candidates on these figures is fair.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr.runtime.checkpoint import LoadedModel, build_model, load_model, read_checkpoint  # noqa: E402
from drsn_asr.training.train import (  # noqa: E402
    VALIDATION_SEED,
    evaluate_split,
    load_train_config,
    prepare_data,
    validation_batches,
)


def candidates(name: str) -> dict[str, tuple[LoadedModel, int | None]]:
    """The networks inside a checkpoint with their epoch: its weights, and for a training run's last.pt written
    with optim.ema_decay also their average."""
    if not Path(name).is_file():
        model = load_model(name, device="cpu")
        return {name: (model, model.training.get("epoch"))}
    state = read_checkpoint(name)
    model = build_model(state, source=name)
    epoch = model.training.get("epoch", state.get("epoch"))  # best.pt records it in training; last.pt beside it
    out = {name: (model, epoch)}
    if "ema" in state:
        out[f"{name} (average)"] = (build_model({**state, "model": state["ema"]["model"]}, source=name), epoch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_train_config(args.config)
    data = prepare_data(cfg, REPO)
    batches, labels = validation_batches(data), data["validation"]["labels"]
    results = {}
    for name in args.checkpoints:
        for label, (model, epoch) in candidates(name).items():
            if model.labels != data["labels"]:
                raise SystemExit(f"{label}: labels {model.labels} differ from the recipe's {data['labels']}")
            r = evaluate_split(model.net, model.frontend(), batches, labels, data["labels"],
                               torch.device("cpu"), seed=VALIDATION_SEED)
            results[label] = {"epoch": epoch, **{k: round(v, 4) for k, v in r.items()}}
            print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in results[label].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
