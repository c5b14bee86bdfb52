"""The `drsn-asr` command line. Printing, progress bars and exit codes live here, not in the library."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .runtime.config import SENSITIVITIES
from .runtime.stream import Detection

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


_WORKER: dict = {}  # a --jobs worker process's model and detector options


def _transcribe_worker_init(model: str | None, options: dict) -> None:
    import torch

    from .runtime.checkpoint import load_model

    torch.set_num_threads(1)  # one file per core; intra-op threads only slow one stream's small batches down
    _WORKER.update(model=load_model(model, device="cpu"), options=options)


def _transcribe_in_worker(file: str) -> tuple[list[Detection] | None, str | None]:
    from .runtime.transcribe import transcribe

    try:
        return transcribe(file, model=_WORKER["model"], **_WORKER["options"]), None
    except (ValueError, FileNotFoundError) as e:
        return None, str(e)


def _detector_options(args: argparse.Namespace) -> dict:
    """The detector options a command was given: --sensitivity, --threshold, --hop-ms (where it has them)."""
    return {k: v for k in ("sensitivity", "threshold", "hop_ms") if (v := getattr(args, k, None)) is not None}


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runtime.checkpoint import load_model
    from .runtime.transcribe import transcribe

    if args.jobs < 1 or (args.jobs > 1 and args.device not in (None, "cpu")):
        print("drsn-asr: --jobs N runs N CPU processes, one file each: give N >= 1, and --jobs 1 with --device cuda",
              file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, device="cpu" if args.jobs > 1 else args.device)
    except ValueError as e:
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 2
    options = _detector_options(args)

    def write(file: str, detections: list[Detection]) -> None:
        if len(args.files) > 1 and args.format == "text":
            print(f"# {file}")
        sys.stdout.write(format_detections(detections, args.format, source=str(file)))
        sys.stdout.flush()

    status = 0
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(args.jobs, len(args.files)), multiprocessing.get_context("spawn"),
                                 initializer=_transcribe_worker_init, initargs=(args.model, options)) as pool:
            results = pool.map(_transcribe_in_worker, args.files)  # in the order of the files
            for file, (detections, error) in tqdm(zip(args.files, results), total=len(args.files), unit="file",
                                                  disable=not sys.stderr.isatty(), leave=False):
                if error is not None:
                    print(f"drsn-asr: {error}", file=sys.stderr)
                    status = 1
                else:
                    write(file, detections)
        return status
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
        write(file, detections)
    return status


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.train import load_train_config, train

    overrides = {}
    optim = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    if optim:
        overrides["optim"] = optim
    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    cfg = load_train_config(args.config, overrides)
    best = train(cfg, base=Path("."), device=args.device, progress=True)
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, one line, not one per process
        print(f"best checkpoint: {best}")
    return 0


def _cmd_train_words(args: argparse.Namespace) -> int:
    from .training.custom import WordsConfig, check_config, load_words_config, train_words

    overrides = {"out": args.out, "epochs": args.epochs, "work_dir": args.work_dir, "base_model": args.base_model}
    if args.negative:
        overrides["negatives"] = tuple(args.negative)
    try:
        if args.config:
            if args.phrases:
                overrides["phrases"] = tuple(args.phrases)
            cfg = load_words_config(args.config, overrides)
        else:
            if args.out is None:
                raise ValueError("--out is required (where the new model goes), e.g. --out my_model.pt")
            cfg = check_config(WordsConfig(phrases=tuple(args.phrases),
                                           **{k: v for k, v in overrides.items() if v is not None}))
        report = train_words(cfg, base=Path("."), device=args.device, progress=True)
    except (ValueError, FileNotFoundError) as e:
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 1
    held = report["held_out_voices"]
    print(f"wrote {report['model']}: labels {', '.join(report['labels'])}")
    print(f"corpus {report['clips']} clips from {report['renderings']} renderings ({report['corpus_s'] / 60:.1f} min), "
          f"training {report['train_s'] / 60:.1f} min")
    if not held["n_clips"]:
        print("held-out TTS voices: none (too few voices for a held-out share); evaluate on your own recordings "
              "with drsn-asr evaluate")
        return 0

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    print(f"held-out TTS voices ({held['n_clips']} clips): keyword accuracy {pct(held['keyword_accuracy'])}, "
          f"rejection of other words {pct(held['unknown_rejection'])}")
    for label, recall in held["per_class"].items():
        print(f"  {label:>20s}  {recall:.1%}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .tools.evaluate import evaluate
    from .runtime.fileio import atomic_write
    from .tools.report import plot_results, result_table, snr_table

    snrs = [float(s) for s in args.snr.split(",")] if args.snr else None
    if snrs and not args.noise_dir:
        print("drsn-asr: --snr needs --noise-dir (a folder of noise recordings)", file=sys.stderr)
        return 2
    detector = _detector_options(args)
    results = {}
    for model in args.model or [None]:
        bar = tqdm(total=0, desc=f"evaluating {model or 'default'}", unit="clip", disable=not sys.stderr.isatty())

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = evaluate(args.dir, model=model, noise_dir=args.noise_dir, snrs_db=snrs, seed=args.seed,
                              device=args.device, detector=detector, progress=progress)
        except (ValueError, FileNotFoundError) as e:
            bar.close()
            print(f"drsn-asr: {e}", file=sys.stderr)
            return 1
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
    from .runtime.checkpoint import available_models, load_model
    from .runtime.model import count_parameters

    for name in available_models():
        m = load_model(name, device="cpu")
        print(f"{name}: {m.net.config.block}, {count_parameters(m.net):,} parameters, labels: {' '.join(m.labels)}")
        if m.sensitivity:  # what --sensitivity picks, in the model's own words
            for preset, settings in m.sensitivity.items():
                per_label = settings.get("thresholds") or {}
                print(f"  --sensitivity {preset}: " + ", ".join(f"{k} {v:g}" for k, v in settings.items()
                                                                if isinstance(v, (int, float)))
                      + (f", its own threshold for {len(per_label)} labels" if per_label else ""))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .tools.bench import format_report, run_benchmarks
    from .runtime.fileio import atomic_write

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        result = run_benchmarks(device=args.device, quick=args.quick, model=args.model, audio_s=args.audio_s,
                                repeats=args.repeats, progress=say, gpu_only=args.gpu_only)
    except (ValueError, FileNotFoundError) as e:
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 1
    options = {"--device": args.device, "--model": args.model, "--audio-s": args.audio_s, "--repeats": args.repeats}
    result["command"] = " ".join(["drsn-asr bench", *(["--quick"] if args.quick else []),
                                  *(["--gpu-only"] if args.gpu_only else []),
                                  *(f"{k} {v}" for k, v in options.items() if v is not None)])
    sys.stdout.write(format_report(result))
    if args.json:
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str))
    return 0


METER_WIDTH = 30
METER_RANGE_DB = 60.0  # the meter spans -60 dBFS (empty) to 0 dBFS (full)


class _Console:
    """Detections on stdout, messages on stderr, and (on a TTY) one meter line on stderr redrawn in place.

    The worker thread prints detections while the main thread redraws the meter, so writes share a lock
    and every other line first erases the meter.
    """

    def __init__(self, meter: bool):
        self.meter_on = meter
        self.lock = threading.RLock()
        self._meter_shown = False

    def _erase_meter(self) -> None:
        if self._meter_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._meter_shown = False

    def line(self, text: str, stream=None) -> None:
        stream = stream or sys.stderr
        with self.lock:
            self._erase_meter()
            stream.write(text if text.endswith("\n") else text + "\n")
            stream.flush()

    def meter(self, level_db: float, scores: dict[str, float]) -> None:
        if not self.meter_on:
            return
        filled = round(METER_WIDTH * min(1.0, max(0.0, 1 + level_db / METER_RANGE_DB)))
        keywords = {k: v for k, v in scores.items() if not k.startswith("_")}
        top = max(keywords, key=keywords.get, default=None)
        best = f"{top} {keywords[top]:.2f}" if top is not None and keywords[top] > 0 else ""
        with self.lock:
            sys.stderr.write(f"\r[{'█' * filled}{'·' * (METER_WIDTH - filled)}] {level_db:6.1f} dB  {best}\033[K")
            sys.stderr.flush()
            self._meter_shown = True


class _ConsoleLogHandler(logging.Handler):
    def __init__(self, console: _Console, formatter: logging.Formatter | None):
        super().__init__()
        self.console = console
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.line(self.format(record))
        except Exception:
            self.handleError(record)


def _cmd_listen(args: argparse.Namespace) -> int:
    import torch

    from .runtime.microphone import CaptureError, list_input_devices, listen

    if args.list_devices:
        from .runtime.microphone import find_input_device

        try:
            default = find_input_device(None).index
        except ValueError:
            default = None
        devices = list_input_devices()
        for d in devices:
            mark = "*" if d.index == default else " "
            print(f"{mark}{d.index:3d}  {d.name}  ({d.max_input_channels} ch, {d.default_samplerate:.0f} Hz)")
        if not devices:
            print("drsn-asr: no input devices found (is a microphone connected? is PortAudio using the right "
                  "audio server?)", file=sys.stderr)
            return 1
        return 0
    # one classification per 50 ms block: extra intra-op threads only contend with the audio and the OS
    torch.set_num_threads(1)
    console = _Console(meter=sys.stderr.isatty())
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    # overflow/drop warnings and capture errors arrive as log records from the library: route them through
    # the console so they never collide with the meter line
    root.handlers = [_ConsoleLogHandler(console, saved_handlers[0].formatter if saved_handlers else None)]
    device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
    options = _detector_options(args)
    n_detections = 0

    def on_detection(d: Detection) -> None:
        nonlocal n_detections
        n_detections += 1
        console.line(format_detections([d], "text"), sys.stdout)

    status = 0
    mic = None
    try:
        mic = listen(on_detection, device=device, model=args.model, **options)
        started = time.monotonic()
        console.line(f"listening on {mic.device.index}: {mic.device.name} ({mic.sample_rate} Hz"
                     f"{f', {mic.channels} ch down-mixed' if mic.channels > 1 else ''}); Ctrl-C to stop")
        while not mic.wait(0.1):
            console.meter(mic.level_db, mic.scores)
            if args.seconds is not None and time.monotonic() - started >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
    except (ValueError, CaptureError) as e:
        console.line(f"drsn-asr: {e}")
        status = 1
    finally:
        if mic is not None:
            mic.stop()
            if mic.error is not None:
                status = 1
            console.line(f"listened {mic.time_s:.1f} s: {n_detections} detection(s), {mic.n_overflows} input "
                         f"overflow(s), {mic.n_dropped_blocks} dropped block(s)")
        root.handlers = saved_handlers
    return status


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    try:
        from .runtime.server import KeywordServer
    except ImportError as e:
        print(f"drsn-asr: serve needs the wyoming package ({e}): pip install 'drsn-asr[server]'", file=sys.stderr)
        return 1
    options = _detector_options(args)
    try:
        server = KeywordServer(args.model, device=args.device, max_streams=args.max_streams,
                               threads=args.threads or None, batch_threads=args.batch_threads, **options)
    except (ValueError, FileNotFoundError) as e:
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 1

    async def run() -> None:
        await server.start(args.uri)
        where = args.uri
        if server.address:
            host, port = server.address
            where = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        print(f"serving {server.name} ({len(server.keywords)} commands) on {where}; up to {server.max_streams} "
              f"streams at once; steps of 32 streams or more on {server.batch_threads} threads; Ctrl-C to stop",
              file=sys.stderr)
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # SIGTERM (docker stop, systemd) ends it cleanly too
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        asyncio.run(run())
    except (ValueError, OSError) as e:  # a URI it cannot serve, a port in use
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .runtime.checkpoint import load_model
    from .tools.export import check_export, export_model

    try:
        model = load_model(args.model, device="cpu")
        path = export_model(model, args.out, format=args.format)
    except (ValueError, FileNotFoundError) as e:
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 1
    try:
        check = f"; max |Δ probability| vs torch on test windows {check_export(model, path):.1e}"
    except ImportError as e:
        check = f"; not checked ({e.name} is not installed)"
    print(f"wrote {path} ({args.format}: {model.net.config.window_s:g} s of {model.features.sample_rate} Hz audio → "
          f"probabilities of {len(model.labels)} labels{check})")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .tools.explain import explain
    from .tools.explain_plot import SUFFIXES, save_report

    out = Path(args.out) if args.out else Path(f"{Path(args.file).stem}_explain.png")
    if out.suffix.lower() not in SUFFIXES:
        print(f"drsn-asr: --out {out}: name a {' or '.join(SUFFIXES)} file", file=sys.stderr)
        return 2
    options = {"start_s": args.start, "end_s": args.end, "hop_ms": args.hop_ms, "device": args.device}
    try:
        expl = explain(args.file, model=args.model, **options)
        compare = explain(args.file, model=args.compare, **options) if args.compare else None
        save_report(expl, out, compare=compare, title=f"drsn-asr explain: {Path(args.file).name}, "
                    f"{expl.start_s:.2f}–{expl.end_s:.2f} s")
    except (ValueError, FileNotFoundError) as e:
        print(f"drsn-asr: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        if e.name != "matplotlib":
            raise
        print("drsn-asr: explain draws with matplotlib, which is not installed: pip install matplotlib", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(expl.times_s)} windows, {len(expl.unit_names)} shrinkage unit(s), "
          f"{len(expl.detections)} detection(s)")
    return 0


# decision.hop_frames enforces it; the frame is the model's own (features.hop_ms)
_HOP_RULE = "a multiple of the model's feature frame, 10 ms for the shipped models (default: the model's, else 50)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drsn-asr", description="Streaming keyword recognizer for noisy streets.")
    parser.add_argument("--version", action="version", version=f"drsn-asr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="recognize commands in audio files",
                       description="Recognize commands in audio files (wav/flac/ogg, any rate or channels).")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, default=None,
                   help="a named operating point the model carries, chosen on real voices (default: balanced); "
                        "the model card gives each one's keywords found and false alarms per hour")
    p.add_argument("--threshold", type=float, default=None,
                   help="detection threshold on the smoothed score (default: the one the model carries, else 0.6)")
    p.add_argument("--hop-ms", type=float, default=None, help=f"classification hop in ms, {_HOP_RULE}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="transcribe N files at once in N CPU processes of one thread each (output stays in the "
                        "order of the files; default 1)")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("train", help="train a model from a YAML recipe",
                       description="Train a model from a YAML recipe (see configs/). Resumes from OUT_DIR/last.pt.")
    p.add_argument("--config", required=True, help="recipe, e.g. configs/default.yaml")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs")
    p.add_argument("--seed", type=int, default=None, help="override optim.seed (data preparation, noise, init)")
    p.add_argument("--out-dir", default=None, help="override out_dir")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("train-words", help="a model for your own commands, trained from text",
                       description="Speak each phrase with every installed TTS voice (plus their parts, your "
                                   "negatives and common words as non-commands), add street noise and fine-tune the "
                                   "default model on them. Phrases must fit in 1 s. Reruns resume.")
    p.add_argument("phrases", nargs="*", help='commands, e.g. "lights on" "lights off" "computer"')
    p.add_argument("--out", default=None, help="checkpoint to write (required unless the config names one)")
    p.add_argument("--config", default=None, help="YAML with the keys of drsn_asr.training.custom.WordsConfig")
    p.add_argument("--negative", action="append", default=[],
                   help="a word or phrase that must NOT trigger (a near-miss of yours); repeatable")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 12)")
    p.add_argument("--base-model", default=None, help="model to start from (default: the shipped default)")
    p.add_argument("--work-dir", default=None, help="corpus, cache and checkpoints (default runs/words)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_train_words)

    p = sub.add_parser("evaluate", help="accuracy on a folder of labelled clips",
                       description="Evaluate on DIR/<word>/<clip>.wav (Speech Commands layout). Clips of words "
                       "outside the vocabulary should come out as _unknown_; _silence_/ holds noise-only clips. "
                       "Clips are scored by the streaming recognizer's rule (a keyword must reach the threshold); "
                       "the threshold-free top-1 figures (the argmax) are reported beside it.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--model", action="append", default=None,
                   help="model name or checkpoint path (repeat to compare models; default: the default model)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full result (with predictions) as JSON")
    p.add_argument("--noise-dir", default=None, help="folder of noise recordings to mix in")
    p.add_argument("--snr", default=None, help="comma-separated SNRs in dB, e.g. 20,10,5,0,-5 (needs --noise-dir)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise choice and placement")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, default=None,
                   help="a named operating point the model carries, chosen on real voices (default: balanced); "
                        "the model card gives each one's keywords found and false alarms per hour")
    p.add_argument("--threshold", type=float, default=None,
                   help="detection threshold (default: the one the model carries, else 0.6)")
    p.add_argument("--hop-ms", type=float, default=None,
                   help=f"classification hop of the sliding-window rule in ms, {_HOP_RULE}")
    p.add_argument("--plots", default=None, metavar="DIR", help="write accuracy-vs-SNR and confusion plots here")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("listen", help="recognize commands live from a microphone",
                       description="Recognize commands live from a microphone until Ctrl-C (or --seconds).")
    p.add_argument("--device", default=None, metavar="NAME|INDEX",
                   help="input device: index or part of its name (default: the system's default input)")
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, default=None,
                   help="a named operating point the model carries, chosen on real voices (default: balanced); "
                        "the model card gives each one's keywords found and false alarms per hour")
    p.add_argument("--threshold", type=float, default=None,
                   help="detection threshold on the smoothed score (default: the one the model carries, else 0.6)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=_cmd_listen)

    p = sub.add_parser("serve", help="serve the recognizer over the Wyoming protocol (Home Assistant, Rhasspy)",
                       description="Wake-word and speech-to-text server speaking the Wyoming protocol: every command "
                       "is offered as a wake word, and transcripts are the recognized commands. Listens on loopback "
                       "only unless --uri names another address (e.g. tcp://0.0.0.0:10400 for every interface).")
    p.add_argument("--uri", default="tcp://127.0.0.1:10400",
                   help="tcp://HOST:PORT or unix://PATH (default: tcp://127.0.0.1:10400)")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, default=None,
                   help="a named operating point the model carries, chosen on real voices (default: balanced); "
                        "the model card gives each one's keywords found and false alarms per hour")
    p.add_argument("--threshold", type=float, default=None,
                   help="detection threshold on the smoothed score (default: the one the model carries, else 0.6)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-streams", type=int, default=None,
                   help="concurrent audio streams served; more are refused with an 'overloaded' error event, and "
                        "a server that falls behind anyway ends its newest streams with it (default: what a 2-core "
                        "host served in real time with the model's frontend, printed when the server starts; "
                        "measure yours with drsn-asr bench)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of the inference thread (default 1; 0 = torch's default)")
    p.add_argument("--batch-threads", type=int, default=None,
                   help="ONNX Runtime's intra-op threads for steps of 32 streams or more (default: the cores this "
                        "process may run on; a step of a few streams keeps --threads)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("export", help="export a model to ONNX or TorchScript",
                       description="Export a model with its frontend: input one window of raw mono audio at 16 kHz "
                       "(1 s, 16000 float32 samples, for log-mel models; 1.2 s for a speech-embedding model that "
                       "carries its own CNN; a model on the package's pretrained CNN is refused), output class "
                       "probabilities; labels and feature settings are embedded. See pipelines/onnx_example.py.")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)")
    p.add_argument("model", metavar="MODEL", help="shipped model name (e.g. default) or checkpoint path")
    p.add_argument("out", metavar="OUT", help="file to write, e.g. model.onnx or model.pt")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("explain", help="picture of what the model saw: log-mel, scores, shrinkage thresholds",
                       description="Draw a recording's log-mel with the detections, the posteriors of every window, "
                       "and for each shrinkage unit the learned thresholds τ (per channel and their mean) and the share "
                       "of activations set to zero, over time. Needs matplotlib.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--compare", default=None, metavar="M2", help="also draw the scores of this model on the same audio")
    p.add_argument("--out", default=None, help="report.png or report.html (default: FILE's stem + _explain.png)")
    p.add_argument("--start", type=float, default=None, metavar="S", help="start of the span in seconds (default 0)")
    p.add_argument("--end", type=float, default=None, metavar="E", help="end of the span in seconds (default: the end)")
    p.add_argument("--hop-ms", type=float, default=None, help=f"one window every hop in ms, {_HOP_RULE}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("models", help="list the shipped models", description="List the models shipped in the package.")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("bench", help="measure speed and scale (real-time factor, latency, streams, throughput)",
                       description="Measure speed and scale with same-run baselines (naive path, PocketSphinx when "
                       "installed); see docs/performance.md.")
    p.add_argument("--json", default=None, metavar="OUT", help="also write every figure, with its runs, as JSON")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="device of the offline, multi-stream and training figures (default cpu; CPU figures always run)")
    p.add_argument("--quick", action="store_true", help="1 minute of audio and 2 runs each (a smoke test, < 1 min)")
    p.add_argument("--gpu-only", action="store_true",
                   help="with --device cuda: only the GPU figures and the CPU ones they are compared with")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--audio-s", type=float, default=None, help="length of the test recording (default 600, quick 60)")
    p.add_argument("--repeats", type=int, default=None, help="runs per figure; the median is reported (default 3, quick 2)")
    p.set_defaults(func=_cmd_bench)
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
