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
from .inference import DEFAULT_THREADS
from .stream import Detection, Recognizer, check_chunk

FILE_BLOCK_S = 30.0


def transcribe(
    path_or_array: str | os.PathLike | np.ndarray | torch.Tensor,
    model: str | LoadedModel | None = None,
    sample_rate: int | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[float, float], Any] | None = None,
    threads: int | None = DEFAULT_THREADS,
    **detector_options: Any,
) -> list[Detection]:
    """Recognize the commands in a file (wav/flac/ogg, any rate and channel count) or a mono array.

    Arrays are taken to be at the model's rate unless `sample_rate` says otherwise; a file's rate comes from its
    header (a `sample_rate` that contradicts it is an error). Files are read in blocks, so memory stays flat for
    hours-long recordings. `progress(done_s, total_s)` is called after each block. `threads`: intra-op threads
    of its inference, as for `stream.Recognizer`.
    Returns the detections in stream order (the same ones a live Recognizer would emit).
    """
    if isinstance(path_or_array, (str, os.PathLike)):
        path = Path(path_or_array)
        file_rate, _, total_s = audio_info(path)
        if sample_rate is not None and sample_rate != file_rate:
            raise ValueError(f"{path}: its header says {file_rate} Hz but sample_rate={sample_rate} was given; "
                             "leave sample_rate out for files (the header's rate is used and resampled)")
        rec = Recognizer(model, device=device, threads=threads, **detector_options)
        blocks = stream_audio(path, sample_rate=rec.model.features.sample_rate, block_s=FILE_BLOCK_S)
    else:
        samples = check_chunk(path_or_array, what="transcribe")
        rec = Recognizer(model, device=device, sample_rate=16000 if sample_rate is None else sample_rate,
                         threads=threads, **detector_options)
        blocks = iter([samples])
        total_s = len(samples) / rec.sample_rate
    detections: list[Detection] = []
    for block in blocks:
        detections += rec.feed(block)
        if progress is not None:
            progress(min(rec.time_s, total_s), total_s)
    detections += rec.flush()
    return detections
