"""Export a model for use without drsn-asr: ONNX (onnxruntime and friends) or TorchScript (libtorch, C++).

Both formats hold the whole classifier, frontend included, so they take raw audio:
    input  "audio": float32 (batch, window_samples) — mono in [-1, 1] at the model's rate; 16000 samples = 1 s
    output "probs": float32 (batch, n_classes)      — softmax over the labels, in the labels' order
(ONNX gets the FFT as a DFT op, opset 20.) The labels, the feature settings and this description travel
inside the file: ONNX `metadata_props` (keys below), TorchScript extra file `drsn_asr.json` (same keys).

Log-mel models and speech-embedding models whose checkpoint carries their own CNN export (`embedding_cnn`
"checkpoint": nothing third-party goes into the file); a model on the package's pretrained CNN does not.
The log-mel frontend, for anyone who feeds features instead (all settings are in `feature_config`):
    frame i   = samples [i·hop, i·hop + window)           no centre padding; 1 s → 98 frames of 25 ms, hop 10 ms
    frame    -= mean(frame)                                only when remove_dc_offset is true
    spectrum  = |rfft(frame · periodic Hann(window), n_fft)|²
    log-mel   = ln(spectrum @ mel_filterbank + log_floor)  Slaney-normalised, Slaney-scale filters, f_min..f_max
An exported model scores one window; streaming (a window every `hop_ms`, smoothing, thresholds) is the
caller's, as in drsn_asr.runtime.stream.Recognizer — pipelines/onnx_example.py shows a minimal version.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime import embedding as E
from ..runtime.checkpoint import LoadedModel, load_model
from ..runtime.config import to_dict
from ..runtime.features import LogMel
from ..runtime.fileio import atomic_write
from ..runtime.inference import import_onnxruntime

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 20  # DFT with a dft_length input, needed for rfft with n_fft > window
METADATA_FILE = "drsn_asr.json"  # TorchScript extra file holding the metadata
INPUT_NAME, OUTPUT_NAME = "audio", "probs"

log = logging.getLogger(__name__)


class AudioClassifier(nn.Module):
    """Raw audio windows (B, window_samples) → class probabilities (B, n_classes): frontend + net + softmax."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        # a speech-embedding model gets here only with its own CNN (export_model refuses the package's)
        self.frontend = LogMel(model.features) if model.features.kind == "logmel" else model.frontend()
        self.net = copy.deepcopy(model.net).cpu().eval()  # the caller's model stays where it is
        self.window_samples = round(model.net.config.window_s * model.features.sample_rate)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(self.frontend(audio)), dim=1)


def _version() -> str:
    try:
        return importlib.metadata.version("drsn-asr")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


_FRONTENDS = {
    "logmel": "frame i = samples [i*hop, i*hop+window); minus its mean if remove_dc_offset; "
              "|rfft(frame * periodic hann(window), n_fft)|^2; @ slaney mel filterbank (f_min_hz..f_max_hz, n_mels); "
              "ln(x + log_floor)",
    "speech_embedding": f"mel frame j = samples [{E.MEL_HOP_SAMPLES}j, {E.MEL_HOP_SAMPLES}j+{E.MEL_FRAME_SAMPLES}) * "
                        f"{E.INT16_SCALE:g}, minus its mean if remove_dc_offset; |rfft(frame * (periodic "
                        f"hann({E.MEL_WINDOW_SAMPLES}) centred in {E.MEL_FRAME_SAMPLES}))|^2 @ slaney mel filterbank "
                        f"({E.MEL_F_MIN_HZ:g}..{E.MEL_F_MAX_HZ:g} Hz, {E.N_MELS}); log10(max(x, {E.MEL_AMIN:g})), "
                        f"clamped below at the frame's max - {E.MEL_TOP_DB / 10:g}, + 2; then the checkpoint's CNN: "
                        f"embedding i ({E.EMBEDDING_DIM} values) from mel frames [{E.EMBEDDING_STEP_MEL_FRAMES}i, "
                        f"{E.EMBEDDING_STEP_MEL_FRAMES}i+{E.EMBEDDING_WINDOW_MEL_FRAMES}), i.e. samples "
                        f"[{E.SpeechEmbedding.hop_samples}i, "
                        f"{E.SpeechEmbedding.hop_samples}i+{E.SpeechEmbedding.window_samples})",
}


def metadata(model: LoadedModel) -> dict[str, str]:
    """What an exported file says about itself: every value a string (ONNX metadata_props are strings)."""
    window_samples = round(model.net.config.window_s * model.features.sample_rate)
    return {
        "labels": json.dumps(model.labels),
        "sample_rate": str(model.features.sample_rate),
        "window_samples": str(window_samples),
        "feature_config": json.dumps(to_dict(model.features)),
        "model_config": json.dumps(to_dict(model.net.config)),
        "input": f"{INPUT_NAME}: float32 [batch, {window_samples}] mono audio in [-1, 1] at "
                 f"{model.features.sample_rate} Hz",
        "output": f"{OUTPUT_NAME}: float32 [batch, {len(model.labels)}] class probabilities in the order of 'labels'",
        "frontend": _FRONTENDS[model.features.kind],
        "source": model.source,
        "training": json.dumps(model.training, default=str),
        "producer": f"drsn-asr {_version()}",
    }


def export_model(model: str | os.PathLike | LoadedModel | None, out: str | os.PathLike, format: str = "onnx") -> Path:
    """Write `model` (name, checkpoint path, LoadedModel or None for the default) to `out`, atomically."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    loaded = load_model(model, device="cpu") if not isinstance(model, LoadedModel) else model
    if loaded.features.kind != "logmel" and loaded.features.embedding_cnn != "checkpoint":
        raise ValueError(f"{loaded.source}: export writes the frontend into the file, and this model's frontend "
                         f"({loaded.features.kind}) is a third-party network that drsn-asr may not redistribute; "
                         "export a log-mel model (e.g. the shipped 'logmel') or run this one through drsn_asr itself")
    module = AudioClassifier(loaded).eval()
    example = torch.zeros(2, module.window_samples)
    out = Path(out)
    if format == "onnx":
        _export_onnx(module, example, metadata(loaded), out)
    else:
        _export_torchscript(module, example, metadata(loaded), out)
    return out


def _export_onnx(module: AudioClassifier, example: torch.Tensor, meta: dict[str, str], out: Path) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise ValueError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                         "pip install 'drsn-asr[export]'") from e
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about every torchvision op it cannot register
    try:
        program = torch.onnx.export(
            module, (example,), None, dynamo=True, opset_version=ONNX_OPSET, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    with atomic_write(out) as tmp:
        onnx.save(proto, str(tmp))


def _export_torchscript(module: AudioClassifier, example: torch.Tensor, meta: dict[str, str], out: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still the C++ path
        # the frontend's Python branches on the window length, which is fixed: the trace holds for every input
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (example,))
        with atomic_write(out) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta)})


def _load_torchscript(path: Path, extra_files: dict[str, str] | None = None) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {})


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an exported file (.onnx: metadata_props; otherwise TorchScript's drsn_asr.json)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    files = {METADATA_FILE: ""}
    _load_torchscript(path, files)
    return json.loads(files[METADATA_FILE])


def run_exported(path: str | os.PathLike, audio: np.ndarray) -> np.ndarray:
    """Probabilities (B, n_classes) from an exported file for windows `audio` (B, window_samples) float32."""
    path = Path(path)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if path.suffix == ".onnx":
        session = import_onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: audio})[0]
    scripted = _load_torchscript(path)
    with torch.no_grad(), torch.jit.optimized_execution(False):  # one call: skip the profiling passes
        return scripted(torch.from_numpy(audio)).numpy()


def parity(model: LoadedModel, path: str | os.PathLike, audio: np.ndarray) -> float:
    """Largest |probability difference| between the exported file and the torch model on windows `audio`."""
    with torch.no_grad():
        expected = AudioClassifier(model)(torch.from_numpy(np.asarray(audio, np.float32))).numpy()
    return float(np.abs(run_exported(path, audio) - expected).max())


def _example_windows(model: LoadedModel) -> np.ndarray:
    """A few varied 1 s windows (speech-like bursts, a tone, silence) for a quick parity check after export."""
    n = round(model.net.config.window_s * model.features.sample_rate)
    rng = np.random.default_rng(0)
    t = np.arange(n) / model.features.sample_rate
    burst = rng.standard_normal(n) * 0.2 * (np.abs(t - 0.5) < 0.2)
    return np.stack([burst, 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(n), rng.standard_normal(n) * 0.01]).astype(np.float32)


def check_export(model: LoadedModel, path: str | os.PathLike) -> float:
    """Parity of an exported file on synthetic windows; the CLI reports it after every export."""
    return parity(model, path, _example_windows(model))

