"""Calibrate a model's scores on real validation speech: one temperature, folded into its last layer.

    python pipelines/calibrate.py MODEL [--out OUT.pt] [--fit DIR ...] [--noise-dir DIR] [--snrs 10,5,0]
                                  [--report NAME=DIR[@NOISE_DIR] ...] [--json OUT] [--plot OUT.png]

The temperature T minimizes the negative log-likelihood of the model's window posteriors on the `--fit` folders
(Speech Commands layout, e.g. those `pipelines/build_testset.py --split validation --config configs/real.yaml`
writes: the validation speakers' commands, lucas's digits, validation sentences, noise), each clean and mixed
with `--noise-dir` at each of `--snrs`. Dividing the classifier's last linear layer by T gives posteriors
softmax(logits / T) with no change to the runtime: the ranking of labels within a window is unchanged; the
scores are scaled so that a score of 0.8 means right about 80% of the time on real voices.

`--report` folders (real and TTS, validation and test) are only measured: expected calibration error (ECE, 15
bins of the top posterior) and a reliability diagram (top posterior against observed accuracy) before and after.
Test folders never influence T.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr import load_model  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio  # noqa: E402
from drsn_asr.runtime.checkpoint import LoadedModel, save_model  # noqa: E402
from drsn_asr.runtime.inference import inference_forward  # noqa: E402
from drsn_asr.tools.evaluate import _noise_segment, clip_windows, expected_label, noise_files  # noqa: E402
from drsn_asr.training.augment import active_rms, mix_at_snr  # noqa: E402
from drsn_asr.training.data import read_labelled_dir  # noqa: E402

N_BINS = 15


@torch.inference_mode()
def clip_logits(model: LoadedModel, folders: list[str], noise_dir: str | None, snrs_db: list[float],
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(logits, label index, condition) of each clip of `folders`, clean and at each SNR: one window per clip,
    centred (the clips are at most a window long; a longer one is scored on its first window)."""
    frontend = model.frontend()
    forward = inference_forward(model.net, backend="torch")
    window = round(model.net.config.window_s * SAMPLE_RATE)
    noises = [(p.stem, read_audio(p)) for p in noise_files(noise_dir)] if noise_dir else []
    conditions = [None] + (snrs_db if noises else [])
    windows, targets, names = [], [], []
    examples = [ex for folder in folders for ex in read_labelled_dir(folder)]
    for i, ex in enumerate(examples):
        audio = clip_windows(read_audio(ex.path), window, window)[0]  # the noise fills the window, not the clip only
        for snr in conditions:
            x = audio
            if snr is not None and active_rms(audio, SAMPLE_RATE) > 0:
                rng = np.random.default_rng([seed, i, int(snr * 10) + 1000])
                name, source = noises[int(rng.integers(len(noises)))]
                x = mix_at_snr(audio, _noise_segment(source, len(audio), rng, name), snr, SAMPLE_RATE)
            windows.append(x)
            targets.append(model.labels.index(expected_label(ex.word, model.labels)))
            names.append("clean" if snr is None else f"{snr:g} dB")
    logits = []
    for start in range(0, len(windows), 64):
        batch = torch.from_numpy(np.stack(windows[start : start + 64]).astype(np.float32))
        logits.append(forward(frontend(batch)).float())
    return torch.cat(logits), torch.tensor(targets), names


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 of least NLL of softmax(logits / T) (a 1-D convex problem in log T: golden-section search)."""
    nll = lambda log_t: float(torch.nn.functional.cross_entropy(logits / np.exp(log_t), targets))  # noqa: E731
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


def reliability(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> dict:
    """ECE and the diagram's bins (mean top posterior, accuracy, count) of softmax(logits / T)."""
    probs = torch.softmax(logits / temperature, dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, N_BINS + 1)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        n = int(inside.sum())
        if n:
            conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
            ece += n / len(targets) * abs(conf - acc)
            bins.append({"confidence": round(conf, 4), "accuracy": round(acc, 4), "n": n})
    nll = float(torch.nn.functional.cross_entropy(logits / temperature, targets))
    return {"ece": round(ece, 4), "nll": round(nll, 4), "accuracy": round(float(correct.mean()), 4),
            "mean_confidence": round(float(confidence.mean()), 4), "n": len(targets), "bins": bins}


def fold_temperature(model: LoadedModel, temperature: float) -> None:
    """softmax(logits / T) from the network itself: its last linear layer divided by T."""
    with torch.no_grad():
        model.net.fc.weight /= temperature
        model.net.fc.bias /= temperature


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        for when, style in (("before", "o-"), ("after", "s-")):
            r = report[name][when]
            ax.plot([b["confidence"] for b in r["bins"]], [b["accuracy"] for b in r["bins"]], style, ms=3,
                    label=f"{when} (ECE {r['ece']:.3f})")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("top posterior", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    for row in axes:
        row[0].set_ylabel("observed accuracy", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", default=None, help="write the calibrated model here")
    parser.add_argument("--fit", action="append", default=None,
                        help="real validation folder to fit T on (repeatable; default: data/validation/"
                             "speech_commands and data/validation/real)")
    parser.add_argument("--noise-dir", default=str(REPO / "data" / "validation" / "noise"))
    parser.add_argument("--snrs", default="10,5,0")
    parser.add_argument("--report", action="append", default=[], metavar="NAME=DIR[@NOISE_DIR]",
                        help="a folder only measured, clean and with its noise at the SNRs (repeatable)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    snrs = [float(s) for s in args.snrs.split(",")]
    fit = args.fit or [str(REPO / "data" / "validation" / "speech_commands"), str(REPO / "data" / "validation" / "real")]
    logits, targets, _ = clip_logits(model, fit, args.noise_dir, snrs)
    temperature = fit_temperature(logits, targets)
    result = {"model": args.model, "temperature": round(temperature, 4), "fit_on": fit, "noise_dir": args.noise_dir,
              "snrs_db": snrs, "fit": {"before": reliability(logits, targets), "after": reliability(logits, targets, temperature)},
              "report": {}}
    for spec in args.report:
        name, _, where = spec.partition("=")
        folder, _, noise_dir = where.partition("@")
        lg, tg, conditions = clip_logits(model, [folder], noise_dir or None, snrs)
        for condition in sorted(set(conditions), key=conditions.index):
            keep = torch.tensor([c == condition for c in conditions])
            result["report"][f"{name}, {condition}"] = {
                "before": reliability(lg[keep], tg[keep]), "after": reliability(lg[keep], tg[keep], temperature)}
    print(json.dumps({"temperature": result["temperature"], "fit": {k: {m: v[m] for m in ("ece", "nll", "accuracy")}
                      for k, v in result["fit"].items()},
                      **{k: {w: v[w]["ece"] for w in v} for k, v in result["report"].items()}}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.plot:
        ends = sorted({k.rpartition(", ")[2] for k in result["report"]}, key=lambda c: c != "clean")[:1] + (
            [f"{min(snrs):g} dB"] if snrs else [])  # clean and the lowest SNR: one row each
        plot({k: v for c in ends for k, v in result["report"].items() if k.endswith(", " + c)}, Path(args.plot))
    if args.out:
        fold_temperature(model, temperature)
        model.training["calibration"] = {"temperature": result["temperature"],
                                         "fit_on": "real validation clips (pipelines/calibrate.py)",
                                         "nll_before": result["fit"]["before"]["nll"],
                                         "nll_after": result["fit"]["after"]["nll"]}
        save_model(args.out, model)
        print(f"wrote {args.out} (temperature {temperature:.3f} folded into its last layer)")


if __name__ == "__main__":
    main()
