"""Self-describing checkpoints: config, labels, feature settings and weights in one file, loaded safely.

A checkpoint is a plain dict of lists, numbers, strings and tensors, so `torch.load(weights_only=True)` can
read it without executing any pickled code:
    {"format": 1, "model_config": {...}, "feature_config": {...}, "labels": [...],
     "model": state_dict, "training": {...}}
and, for a model whose speech-embedding CNN is its own (feature_config.embedding_cnn "checkpoint"),
"frontend_cnn": {"plan": [...], "weights": [...]} (embedding.cnn_record).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import DetectorConfig, FeatureConfig, ModelConfig, from_dict, to_dict
from .features import make_frontend
from .fileio import atomic_write
from .model import KeywordNet, SequenceNet, build_net

FORMAT_VERSION = 1
ASSETS = "assets"
DEFAULT_MODEL = "default"


@dataclass
class LoadedModel:
    """A classifier in eval mode plus what it needs to be used: labels, frontend settings, the detector settings
    chosen for it on validation data (`detector`; options given to a Recognizer take precedence), and named
    operating points (`sensitivity`: {"few_false_alarms" | "balanced" | "find_everything": settings}), and the
    speech-embedding CNN its checkpoint carries (`frontend_cnn`, an `embedding.cnn_record`; None: the package's).
    Build its frontend with `frontend()`, never from `features` alone."""

    net: KeywordNet | SequenceNet
    labels: list[str]
    features: FeatureConfig
    training: dict[str, Any]
    source: str
    detector: dict[str, Any] = field(default_factory=dict)  # DetectorConfig fields the model recommends
    sensitivity: dict[str, dict[str, Any]] = field(default_factory=dict)  # preset name -> DetectorConfig fields
    frontend_cnn: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def frontend(self) -> torch.nn.Module:
        """A new frontend for this model's frames (on the CPU): `features.make_frontend` with its own CNN if it has one."""
        return make_frontend(self.features, self.frontend_cnn, self.source)


def save_checkpoint(
    path: str | os.PathLike, net: KeywordNet, labels: list[str], training: dict[str, Any] | None = None,
    frontend_cnn: dict[str, Any] | None = None, **extra: Any
) -> None:
    """Write a checkpoint atomically (temp file, then rename), so a crash never leaves half a file.
    `frontend_cnn` (an `embedding.cnn_record`) is required exactly when `net.features.embedding_cnn` is "checkpoint"."""
    path = Path(path)
    if len(labels) != net.n_classes:
        raise ValueError(f"{len(labels)} labels for a model with {net.n_classes} outputs")
    net.features.check_cnn_given(frontend_cnn is not None, str(path),
                                 "pass the model's frontend_cnn to save_checkpoint exactly when its features name one")
    state = {
        "format": FORMAT_VERSION,
        "model_config": to_dict(net.config),
        "feature_config": to_dict(net.features),
        "labels": list(labels),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "training": training or {},
        **_frontend_record(net.features),
        **({"frontend_cnn": frontend_cnn} if frontend_cnn is not None else {}),
        **extra,
    }
    with atomic_write(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch reports a full disk as "[enforce fail at inline_container.cc] ..."
            raise OSError(f"{path}: writing the checkpoint failed ({e}); is the disk full or the folder "
                          "read-only? Nothing was written") from e


def _frontend_record(features: FeatureConfig) -> dict[str, Any]:
    """For a frontend whose weights live in another package: the files it needs, by name and SHA-256 (never
    the weights themselves); a model with its own CNN needs none."""
    if features.kind == "logmel" or features.embedding_cnn == "checkpoint":
        return {}
    from .embedding import frontend_files

    return {"frontend_files": [{"name": f["name"], "package": f["package"], "sha256": f["sha256"]}
                               for f in frontend_files().values()]}


def _check_archive(path: Path) -> None:
    """torch.load does not check the CRC-32s of a checkpoint's records: a flipped bit would load as a wrong weight."""
    if not zipfile.is_zipfile(path):
        return  # not a zip archive: torch.load's own errors apply
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt: {e}); re-download or re-train it") from e
    if bad is not None:
        raise ValueError(f"{path}: corrupt — record {bad} fails its CRC-32 check; re-download or re-train it")


def save_model(path: str | os.PathLike, model: LoadedModel, sensitivity: dict[str, dict[str, Any]] | None = None,
               **detector_settings: Any) -> None:
    """Write a loaded model as a checkpoint; `detector_settings` (DetectorConfig fields, e.g. a threshold chosen on
    validation data) join the settings it carries, and Recognizers made from the file use them by default.
    `sensitivity` replaces its named presets (default: those it carries)."""
    detector = {**model.detector, **detector_settings}
    from_dict(DetectorConfig, detector, prefix="detector")
    presets = model.sensitivity if sensitivity is None else sensitivity
    _check_presets(detector, presets)
    save_checkpoint(path, model.net, model.labels, model.training, model.frontend_cnn, detector=detector,
                    **({"sensitivity": presets} if presets else {}))


def _check_presets(detector: dict[str, Any], presets: dict[str, dict[str, Any]]) -> None:
    """A ValueError naming `sensitivity.NAME` when a preset, over the carried settings, is no DetectorConfig."""
    for name, preset in presets.items():
        from_dict(DetectorConfig, {**detector, **preset}, prefix=f"sensitivity.{name}")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load with weights_only=True; refuses pickles that would execute code, and truncated or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    _check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise ValueError(f"{path}: not a readable checkpoint (corrupt: {e}); re-download or re-train it") from e
        raise ValueError(
            f"{path}: refused — the file needs arbitrary pickle execution to load, which drsn-asr never does. "
            "Re-save it with drsn_asr.runtime.checkpoint.save_checkpoint from a trusted environment."
        ) from e
    except Exception as e:  # RuntimeError, EOFError, UnicodeDecodeError, ... from a damaged file
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt: {e}); re-download or re-train it") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a drsn-asr checkpoint (format {FORMAT_VERSION} expected)")
    return state


def build_model(state: dict[str, Any], source: str = "<memory>") -> LoadedModel:
    """A LoadedModel (eval mode, CPU) from a checkpoint dict."""
    try:
        model_config = from_dict(ModelConfig, state["model_config"], prefix="model_config")
        feature_config = from_dict(FeatureConfig, state["feature_config"], prefix="feature_config")
        labels = list(state["labels"])
        net = build_net(model_config, feature_config, len(labels))
        net.load_state_dict(state["model"])
        frontend_cnn = state.get("frontend_cnn")
        if state.get("frontend_files"):
            from .embedding import check_recorded_files

            check_recorded_files(state["frontend_files"], source)
        feature_config.check_cnn_given(frontend_cnn is not None, source, "re-download or re-save the checkpoint")
        if frontend_cnn is not None:
            from .embedding import check_cnn

            check_cnn(frontend_cnn, source)
        detector = dict(state.get("detector", {}))
        from_dict(DetectorConfig, detector, prefix="detector")  # a setting this version does not know is an error
        sensitivity = {str(k): dict(v) for k, v in state.get("sensitivity", {}).items()}
        _check_presets(detector, sensitivity)
    except (KeyError, TypeError, RuntimeError) as e:  # a missing entry, or weights that do not fit the config
        raise ValueError(f"{source}: not a usable drsn-asr checkpoint ({type(e).__name__}: {e}); "
                         "re-download or re-train it") from e
    net.eval()
    return LoadedModel(net, labels, feature_config, dict(state.get("training", {})), source, detector, sensitivity,
                       frontend_cnn)


def available_models() -> list[str]:
    """Names of the models shipped inside the package."""
    root = importlib.resources.files("drsn_asr") / ASSETS
    return sorted(p.name[: -len(".pt")] for p in root.iterdir() if p.name.endswith(".pt"))


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shipped_digests() -> dict[str, str]:
    sums = importlib.resources.files("drsn_asr") / ASSETS / "SHA256SUMS"
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            out[name] = digest
    return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` → CUDA when available, else CPU; otherwise the device asked for (checked)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA GPU is available; use device='cpu'")
    return device


def load_model(
    name_or_path: str | os.PathLike | LoadedModel | None = None, device: str | torch.device | None = None
) -> LoadedModel:
    """Load a shipped model by name (default: the shipped default model) or a checkpoint file by path.

    Shipped models are verified against the SHA-256 recorded in the package. `device=None` picks CUDA when
    available. A `LoadedModel` passes through (moved to `device` if one is given).
    """
    if isinstance(name_or_path, LoadedModel):
        if device is not None:
            name_or_path.net.to(resolve_device(device))
        return name_or_path
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"model must be a shipped model name, a checkpoint path or a LoadedModel, got "
                         f"{type(name_or_path).__name__}; shipped models: {', '.join(available_models()) or 'none'}")
    name = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    if name in available_models():
        resource = importlib.resources.files("drsn_asr") / ASSETS / f"{name}.pt"
        with importlib.resources.as_file(resource) as path:
            expected = _shipped_digests().get(f"{name}.pt")
            if expected is None or sha256(path) != expected:
                raise ValueError(
                    f"shipped model {name!r} fails its SHA-256 check: the package is damaged; reinstall drsn-asr"
                )
            loaded = build_model(read_checkpoint(path), source=name)
    elif Path(name).is_file():
        loaded = build_model(read_checkpoint(name), source=str(name))
    else:
        raise ValueError(
            f"no model named {name!r} and no such file; shipped models: {', '.join(available_models()) or 'none'} "
            "(or pass the path of a .pt checkpoint)"
        )
    loaded.net.to(resolve_device(device))
    return loaded
