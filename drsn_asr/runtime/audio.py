"""Audio I/O and validation at the boundary: files and arrays in, 16 kHz mono float32 out.

Every conversion is explicit: integer PCM is scaled by its full-scale value, other sample rates are resampled
only when the rate is known (from the file header or a declared `sample_rate`), and multichannel files are
down-mixed (arrays are refused: a stereo stream fed to a recognizer is a caller bug more often than not).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from .fileio import atomic_write

SAMPLE_RATE = 16000
READ_FORMATS = ("wav", "flac", "ogg")
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000  # outside this: a corrupt header or a wrongly declared rate

log = logging.getLogger(__name__)

_INT_FULL_SCALE = {np.dtype(np.int8): 128.0, np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def to_float32(samples: np.ndarray | torch.Tensor, what: str = "audio") -> np.ndarray:
    """Convert a 1-D mono array of int8/int16/int32/uint8/float16/float32/float64 samples (either byte order; torch
    tensors too) to a contiguous float32 array in [-1, 1].

    Raises ValueError for other dtypes, more than one dimension, and non-finite values.
    """
    return float32_and_peak(samples, what)[0]


def float32_and_peak(samples: np.ndarray | torch.Tensor, what: str = "audio") -> tuple[np.ndarray, float | None]:
    """`to_float32`, and for float input the largest |sample| (None for integer PCM, which cannot exceed 1): the
    checks of a live chunk in one pass over it, since a 10 ms chunk costs microseconds."""
    if isinstance(samples, torch.Tensor):
        if samples.is_floating_point() and samples.dtype not in (torch.float16, torch.float32, torch.float64):
            samples = samples.float()  # bfloat16 and other torch-only floats have no numpy dtype
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        raise ValueError(
            f"{what}: expected a numpy array or torch tensor of samples, got {type(samples).__name__}; "
            "wrap lists with np.asarray(x, dtype=np.float32) and decode bytes with np.frombuffer(b, dtype=np.int16)"
        )
    if samples.ndim != 1:
        raise ValueError(
            f"{what}: expected mono samples of shape (n,), got shape {samples.shape}; "
            "down-mix first, e.g. x.mean(axis=1) for (n, channels) audio"
        )
    if not samples.dtype.isnative:  # big-endian PCM, e.g. np.frombuffer(data, ">i2")
        samples = samples.astype(samples.dtype.newbyteorder("="))
    dtype = samples.dtype
    samples = np.ascontiguousarray(samples)  # reversed or strided views: torch.from_numpy refuses negative strides
    if dtype in _INT_FULL_SCALE:
        out = samples.astype(np.float32)
        out *= np.float32(1 / _INT_FULL_SCALE[dtype])  # powers of two: exact, as a division would be
        return out, None
    if dtype == np.uint8:
        return ((samples.astype(np.float32) - 128.0) / 128.0).astype(np.float32), None
    if dtype in (np.float32, np.float64, np.float16):
        if dtype == np.float32:
            out = samples
        else:
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused just below
                out = samples.astype(np.float32)
        peak = float(np.abs(out).max()) if out.size else 0.0  # NaN or inf if any sample is
        if not math.isfinite(peak):
            bad = int(np.flatnonzero(~np.isfinite(out))[0])
            raise ValueError(f"{what}: sample {bad} is NaN or infinite; clean the signal (e.g. np.nan_to_num) first")
        if not (out.flags.c_contiguous and out.flags.writeable) or out.strides[0] < 0:  # a 1-sample view is
            out = out.copy()  # "contiguous" yet torch.from_numpy refuses its negative stride; read-only: it warns
        return out, peak
    raise ValueError(
        f"{what}: unsupported sample dtype {dtype}; use float32 in [-1, 1] or int16 PCM"
    )


@functools.lru_cache(maxsize=16)
def _sinc_kernel(from_unit: int, to_unit: int, zero_crossings: int = 6, rolloff: float = 0.99
                 ) -> tuple[torch.Tensor, int]:
    """The band-limited (Hann-windowed sinc) kernels of torchaudio.functional.resample for rates reduced by their
    gcd: (to_unit, 1, taps) float32 and the padding width. Ported from torchaudio (BSD-2-Clause) so that the
    runtime needs no torchaudio, whose PyPI builds do not load beside a CPU-only torch."""
    base = min(from_unit, to_unit) * rolloff
    width = math.ceil(zero_crossings * from_unit / base)
    idx = torch.arange(-width, width + from_unit, dtype=torch.float64)[None, None] / from_unit
    t = torch.arange(0, -to_unit, -1)[:, None, None] / to_unit + idx  # float32 then float64, as torchaudio does
    t = (t * base).clamp_(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), t.sin() / t)
    kernels *= window * (base / from_unit)
    return kernels.to(torch.float32), width


def resample_tensor(x: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Band-limited sinc resampling of float audio (..., n_samples): torchaudio.functional.resample's algorithm
    and defaults (6 zero crossings, roll-off 0.99), to float rounding."""
    if from_rate == to_rate:
        return x
    g = math.gcd(int(from_rate), int(to_rate))
    from_unit, to_unit = int(from_rate) // g, int(to_rate) // g
    kernel, width = _sinc_kernel(from_unit, to_unit)
    shape = x.shape
    flat = F.pad(x.reshape(-1, shape[-1]), (width, width + from_unit))
    out = F.conv1d(flat[:, None], kernel.to(x.device, x.dtype), stride=from_unit)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, : -(-to_unit * shape[-1] // from_unit)]
    return out.reshape(*shape[:-1], out.shape[-1])


def resample(samples: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float32 mono audio with band-limited sinc interpolation (`resample_tensor`)."""
    if from_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {from_rate}")
    if from_rate == to_rate:
        return samples
    out = resample_tensor(torch.from_numpy(np.ascontiguousarray(samples)), int(from_rate), int(to_rate))
    return out.numpy().astype(np.float32, copy=False)


def _as_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"expected the path of an audio file (str or pathlib.Path), got {type(path).__name__}; for audio "
            "already in memory use soundfile.read(io.BytesIO(data)) or pass the samples as a numpy array"
        )
    return Path(path)


def _check_rate(rate: int, what: str) -> None:
    if isinstance(rate, bool) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{what}: {rate!r} Hz is not a plausible audio sample rate (expected {MIN_SAMPLE_RATE}–"
            f"{MAX_SAMPLE_RATE} Hz); check the declared rate, or the file's header is corrupt"
        )


def _open(path: Path) -> sf.SoundFile:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; pass an audio file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); re-export or re-record it")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(
            f"{path}: not a readable audio file ({e}); supported formats are {', '.join(READ_FORMATS)} — "
            "convert with e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`"
        ) from e


def _check_wav_header(path: Path) -> None:
    """libsndfile quietly shortens a truncated WAV to what is there, and reads PCM whose bits per sample disagree
    with its block size as some other width: compare the data chunk's size to the file, and the two widths."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(4) != b"RIFF" or (f.read(4) and f.read(4) != b"WAVE"):
            return
        while True:
            header = f.read(8)
            if len(header) < 8:
                return
            chunk_id, chunk_size = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"fmt " and chunk_size >= 16:
                fmt = f.read(16)
                f.seek(-16, 1)
                code, channels, block_align, bits = (int.from_bytes(fmt[i : i + 2], "little") for i in (0, 2, 12, 14))
                if code in (1, 3, 0xFFFE) and block_align != channels * -(-bits // 8):  # PCM, float, extensible
                    raise ValueError(
                        f"{path}: corrupt header — {channels} channel(s) of {bits}-bit samples cannot fill "
                        f"{block_align}-byte frames; re-export the file"
                    )
            if chunk_id == b"data":
                if chunk_size not in (0, 0xFFFFFFFF) and f.tell() + chunk_size > size:
                    raise ValueError(
                        f"{path}: truncated — the header promises {chunk_size} bytes of audio but the file holds "
                        f"{size - f.tell()}; the file was probably cut off while being written"
                    )
                return
            f.seek(chunk_size + (chunk_size & 1), 1)


def _downmix(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1) if block.ndim == 2 else block


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a wav/flac/ogg file as float32 mono at `sample_rate`.

    Multichannel files are down-mixed (logged once); other rates are resampled. Raises ValueError with what to
    do for empty, truncated, corrupt or unsupported files and for non-finite samples.
    """
    chunks = list(stream_audio(path, sample_rate=sample_rate, block_s=None))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def stream_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, block_s: float | None = 30.0
) -> Iterator[np.ndarray]:
    """Yield a file's audio as float32 mono blocks at `sample_rate`, holding one block in memory at a time.

    `block_s=None` yields the whole file at once. Resampling goes through a StreamResampler, so the
    concatenated blocks equal the whole-file result whatever `block_s` is.
    """
    path = _as_path(path)
    with _open(path) as f:
        if f.frames == 0:
            raise ValueError(f"{path}: contains no audio samples; re-export or re-record it")
        _check_rate(f.samplerate, str(path))
        if f.format == "WAV":
            _check_wav_header(path)
        if f.channels > 1:
            log.info("%s: %d channels down-mixed to mono", path, f.channels)
        block_frames = f.frames if block_s is None else max(1, int(block_s * f.samplerate))
        resampler = StreamResampler(f.samplerate, sample_rate)
        n_read = 0
        try:
            for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                n_read += len(block)
                mono = to_float32(np.ascontiguousarray(_downmix(block)), what=str(path))
                out = resampler.feed(mono)
                if len(out):
                    yield out
        except (sf.LibsndfileError, RuntimeError) as e:
            raise ValueError(f"{path}: the file is corrupt or truncated after {n_read} samples ({e})") from e
        if n_read < f.frames:
            raise ValueError(
                f"{path}: truncated — the header promises {f.frames} samples but only {n_read} could be read; "
                "the file was probably cut off while being written"
            )
        tail = resampler.flush()
        if len(tail):
            yield tail


class StreamResampler:
    """Resample a stream chunk by chunk; the output does not depend on how the input was chunked.

    Input is cut into fixed blocks, each resampled with `context` input samples of real neighbours on both
    sides (zeros before the start and after flush), so it matches resampling the whole signal at once to
    float rounding. Output lags input by one block plus the context.
    """

    def __init__(self, from_rate: int, to_rate: int = SAMPLE_RATE, block_in: int = 4096, context: int = 256):
        _check_rate(from_rate, "sample_rate")
        _check_rate(to_rate, "target sample_rate")
        g = np.gcd(int(from_rate), int(to_rate))
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        self._in_unit, self._out_unit = self.from_rate // g, self.to_rate // g
        self.block_in = -(-block_in // self._in_unit) * self._in_unit
        self.context = -(-context // self._in_unit) * self._in_unit
        self.reset()

    def reset(self) -> None:
        """Forget buffered input; the next sample is the start of a new stream."""
        self._buffer = np.zeros(self.context, np.float32)  # left context of the first block is silence
        self._n_in = 0
        self._n_out = 0

    def _out_len(self, n_in: int) -> int:
        return -(-n_in * self._out_unit // self._in_unit)

    def _run(self, n_blocks_in: int) -> np.ndarray:
        segment = self._buffer[: self.context + n_blocks_in + self.context]
        y = resample(segment, self.from_rate, self.to_rate)
        start = self.context * self._out_unit // self._in_unit
        return y[start : start + n_blocks_in * self._out_unit // self._in_unit]

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Add float32 mono samples; return the resampled samples that are now final."""
        if self.from_rate == self.to_rate:
            self._n_in += len(samples)
            return samples
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        self._n_in += len(samples)
        ready = (len(self._buffer) - 2 * self.context) // self.block_in * self.block_in
        if ready <= 0:
            return np.zeros(0, np.float32)
        out = self._run(ready)
        self._buffer = self._buffer[ready:]
        self._n_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """End of stream: return the rest of the output (zero right context) and reset."""
        if self.from_rate == self.to_rate:
            self.reset()
            return np.zeros(0, np.float32)
        pending = len(self._buffer) - self.context
        self._buffer = np.concatenate([self._buffer, np.zeros(self.context, np.float32)])
        padded = -(-pending // self._in_unit) * self._in_unit
        self._buffer = np.concatenate([self._buffer, np.zeros(padded - pending, np.float32)])
        out = self._run(padded) if padded > 0 else np.zeros(0, np.float32)
        out = out[: max(0, self._out_len(self._n_in) - self._n_out)]
        self.reset()
        return out


def audio_info(path: str | os.PathLike) -> tuple[int, int, float]:
    """(sample_rate, channels, duration_s) of an audio file, with the same checks as read_audio."""
    path = _as_path(path)
    with _open(path) as f:
        _check_rate(f.samplerate, str(path))
        return f.samplerate, f.channels, f.frames / f.samplerate


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float32 mono audio as 16-bit PCM wav/flac (or Vorbis ogg) by suffix, atomically: temp file, then rename."""
    path = Path(path)
    samples = to_float32(samples, what="write_audio")
    if np.abs(samples).max(initial=0.0) > 1.0:
        log.warning("%s: samples beyond full scale are clipped to [-1, 1] when written", path)
    with atomic_write(path) as tmp:
        fmt = _format_of(path)
        try:
            sf.write(tmp, np.clip(samples, -1.0, 1.0), sample_rate, format=fmt,
                     subtype="VORBIS" if fmt == "OGG" else "PCM_16")
        except RuntimeError as e:  # libsndfile says only "System error." when the disk fills up
            raise OSError(f"{path}: writing failed ({e}); is the disk full or the folder read-only? "
                          "Nothing was written") from e


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in READ_FORMATS:
        raise ValueError(f"{path}: cannot write .{suffix}; use one of {', '.join(READ_FORMATS)}")
    return suffix.upper()
