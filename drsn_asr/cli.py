"""The `drsn-asr` command line. Printing, progress bars and exit codes live here, not in the library."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path

from .stream import Detection

FORMATS = ("text", "json", "csv", "srt")


def _srt_time(t_s: float) -> str:
    ms = round(t_s * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def format_detections(detections: list[Detection], fmt: str, source: str = "") -> str:
    """Detections as text (`12.34–12.81  stop  0.97`), json, csv or srt."""
    if fmt == "text":
        return "".join(f"{d.start_s:.2f}–{d.end_s:.2f}  {d.label}  {d.score:.2f}\n" for d in detections)
    if fmt == "json":
        return json.dumps([{"file": source, **d.__dict__} for d in detections], indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", "start_s", "end_s", "label", "score"])
        for d in detections:
            writer.writerow([source, f"{d.start_s:.3f}", f"{d.end_s:.3f}", d.label, f"{d.score:.4f}"])
        return out.getvalue()
    if fmt == "srt":
        return "".join(
            f"{i}\n{_srt_time(d.start_s)} --> {_srt_time(d.end_s)}\n{d.label} ({d.score:.2f})\n\n"
            for i, d in enumerate(detections, 1)
        )
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import load_model
    from .transcribe import transcribe

    model = load_model(args.model, device=args.device)
    options = {"threshold": args.threshold} if args.threshold is not None else {}
    if args.hop_ms is not None:
        options["hop_ms"] = args.hop_ms
    status = 0
    for file in args.files:
        bar = tqdm(total=0, unit="s", desc=Path(file).name, disable=not sys.stderr.isatty(), leave=False,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

        def progress(done_s: float, total_s: float) -> None:
            bar.total = total_s
            bar.update(done_s - bar.n)

        try:
            detections = transcribe(file, model=model, progress=progress, **options)
        except (ValueError, FileNotFoundError) as e:
            bar.close()
            print(f"drsn-asr: {e}", file=sys.stderr)
            status = 1
            continue
        bar.close()
        if len(args.files) > 1 and args.format == "text":
            print(f"# {file}")
        sys.stdout.write(format_detections(detections, args.format, source=str(file)))
        sys.stdout.flush()
    return status


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import load_train_config, train

    overrides = {}
    if args.epochs is not None:
        overrides["optim"] = {"epochs": args.epochs}
    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    cfg = load_train_config(args.config, overrides)
    best = train(cfg, base=Path("."), device=args.device, progress=True)
    print(f"best checkpoint: {best}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .config import DetectorConfig
    from .evaluate import evaluate
    from .fileio import atomic_write
    from .report import plot_results, result_table, snr_table

    snrs = [float(s) for s in args.snr.split(",")] if args.snr else None
    if snrs and not args.noise_dir:
        print("drsn-asr: --snr needs --noise-dir (a folder of noise recordings)", file=sys.stderr)
        return 2
    detector = DetectorConfig(threshold=args.threshold) if args.threshold is not None else DetectorConfig()
    results = {}
    for model in args.model or [None]:
        bar = tqdm(total=0, desc=f"evaluating {model or 'default'}", unit="clip", disable=not sys.stderr.isatty())

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = evaluate(args.dir, model=model, noise_dir=args.noise_dir, snrs_db=snrs, seed=args.seed,
                          device=args.device, detector=detector, progress=progress)
        bar.close()
        results[result["model"]] = result
        print(f"== {result['model']} on {args.dir}")
        print(result_table(result))
    if len(results) > 1 or snrs:
        print(snr_table(results))
    if args.json:
        payload = next(iter(results.values())) if len(results) == 1 else {"models": results}
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(payload, indent=1))
    if args.plots:
        for path in plot_results(results, args.plots):
            print(f"wrote {path}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .checkpoint import available_models, load_model
    from .model import count_parameters

    for name in available_models():
        m = load_model(name, device="cpu")
        print(f"{name}: {m.net.config.block}, {count_parameters(m.net):,} parameters, labels: {' '.join(m.labels)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drsn-asr", description="Streaming keyword recognizer for noisy streets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="recognize commands in audio files",
                       description="Recognize commands in audio files (wav/flac/ogg, any rate or channels).")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold on the smoothed score")
    p.add_argument("--hop-ms", type=float, default=None, help="classification hop in ms (default 50)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("train", help="train a model from a YAML recipe",
                       description="Train a model from a YAML recipe (see configs/). Resumes from OUT_DIR/last.pt.")
    p.add_argument("--config", required=True, help="recipe, e.g. configs/default.yaml")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    p.add_argument("--out-dir", default=None, help="override out_dir")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="accuracy on a folder of labelled clips",
                       description="Evaluate on DIR/<word>/<clip>.wav (Speech Commands layout). Clips of words "
                       "outside the vocabulary should come out as _unknown_; _silence_/ holds noise-only clips.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--model", action="append", default=None,
                   help="model name or checkpoint path (repeat to compare models; default: the default model)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full result (with predictions) as JSON")
    p.add_argument("--noise-dir", default=None, help="folder of noise recordings to mix in")
    p.add_argument("--snr", default=None, help="comma-separated SNRs in dB, e.g. 20,10,5,0,-5 (needs --noise-dir)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise choice and placement")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold (default: the detector's)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write accuracy-vs-SNR and confusion plots here")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("models", help="list the shipped models", description="List the models shipped in the package.")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
