"""Offline transcription: a file or array replayed through the same streaming Recognizer, block by block."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import audio_info, stream_audio
from .checkpoint import LoadedModel
from .stream import Detection, Recognizer

FILE_BLOCK_S = 30.0


def transcribe(
    path_or_array: str | os.PathLike | np.ndarray | torch.Tensor,
    model: str | LoadedModel | None = None,
    sample_rate: int | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[float, float], Any] | None = None,
    **detector_options: Any,
) -> list[Detection]:
    """Recognize the commands in a file (wav/flac/ogg, any rate and channel count) or a mono array.

    Arrays are taken to be at the model's rate unless `sample_rate` says otherwise. Files are read in blocks,
    so memory stays flat for hours-long recordings. `progress(done_s, total_s)` is called after each block.
    Returns the detections in stream order (the same ones a live Recognizer would emit).
    """
    if isinstance(path_or_array, (str, os.PathLike)):
        path = Path(path_or_array)
        total_s = audio_info(path)[2]
        rec = Recognizer(model, device=device, **detector_options)
        blocks = stream_audio(path, sample_rate=rec.model.features.sample_rate, block_s=FILE_BLOCK_S)
    else:
        rec = Recognizer(model, device=device, sample_rate=sample_rate or 16000, **detector_options)
        blocks = iter([path_or_array])
        total_s = len(path_or_array) / rec.sample_rate
    detections: list[Detection] = []
    for block in blocks:
        detections += rec.feed(block)
        if progress is not None:
            progress(min(rec.time_s, total_s), total_s)
    detections += rec.flush()
    return detections
