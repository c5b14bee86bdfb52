"""Log-mel frontend: a torch module for batches and an incremental form for streams.

Frame i covers samples [i*hop, i*hop + window) with no centre padding, so a stream can emit each frame as soon
as its last sample has arrived and the frames equal those of the whole signal.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .config import FeatureConfig


def _hz_to_slaney_mel(hz: float) -> float:
    """Linear below 1 kHz (15 mels there), logarithmic above."""
    return hz / (200.0 / 3) if hz < 1000.0 else 15.0 + math.log(hz / 1000.0) / (math.log(6.4) / 27.0)


def _slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * (200.0 / 3)
    return torch.where(mel >= 15.0, 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mel - 15.0)), linear)


def mel_filterbank(n_freqs: int, f_min_hz: float, f_max_hz: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular mel filters (n_freqs, n_mels) on the Slaney mel scale with Slaney (area) normalisation: the
    matrix torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney") gives, to float rounding
    (its algorithm, ported so that the runtime needs no torchaudio)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    points = _slaney_mel_to_hz(torch.linspace(_hz_to_slaney_mel(f_min_hz), _hz_to_slaney_mel(f_max_hz), n_mels + 2))
    widths = points[1:] - points[:-1]
    slopes = points[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    fbank = torch.clamp(torch.minimum(down, up), min=0.0)
    return fbank * (2.0 / (points[2:] - points[:-2]))[None, :]


class LogMel(nn.Module):
    """Audio (..., n_samples) float32 → log-mel (..., n_mels, n_frames)."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.config = config
        if config.window_samples > config.n_fft:
            raise ValueError(f"features.window_ms gives {config.window_samples} samples > n_fft={config.n_fft}")
        self.register_buffer("window", torch.hann_window(config.window_samples, periodic=True), persistent=False)
        fbank = mel_filterbank(config.n_fft // 2 + 1, config.f_min_hz, config.f_max_hz, config.n_mels,
                               config.sample_rate)
        self.register_buffer("fbank", fbank, persistent=False)  # (n_freqs, n_mels)
        self._numpy_window: np.ndarray | None = None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        # Always float32, also inside a caller's autocast (mixed-precision training): a float16 mel product
        # rounds quiet frames' power (log-mel off by up to 0.025 at -40 dBFS) and overflows past 65504.
        with torch.autocast(audio.device.type, enabled=False):
            frames = audio.unfold(-1, c.window_samples, c.hop_samples)  # (..., n_frames, window)
            if c.remove_dc_offset:
                # A DC offset (cheap mics, un-high-passed sound cards) leaks through the window's side lobes into
                # the low mel bands; removing it per frame keeps the frontend frame-local, so streaming stays exact.
                frames = frames - frames.mean(dim=-1, keepdim=True)
            spectrum = torch.fft.rfft(frames * self.window, n=c.n_fft)
            power = spectrum.real.square() + spectrum.imag.square()
            mel = power @ self.fbank  # (..., n_frames, n_mels)
            return torch.log(mel + c.log_floor).transpose(-1, -2)

    def numpy(self, audio: np.ndarray) -> np.ndarray:
        """`forward` in numpy for float32 audio (..., n_samples) on the CPU: the same frames to ~1e-6, with a
        fraction of torch's per-call overhead, which dominates for the few frames of one stream's hop."""
        c = self.config
        if self._numpy_window is None:
            self._numpy_window = self.window.cpu().numpy()
        n_frames = (audio.shape[-1] - c.window_samples) // c.hop_samples + 1
        step = audio.strides[-1]  # a strided view, as sliding_window_view makes, at a fraction of its overhead
        frames = np.lib.stride_tricks.as_strided(audio, (*audio.shape[:-1], n_frames, c.window_samples),
                                                 (*audio.strides[:-1], c.hop_samples * step, step), writeable=False)
        if c.remove_dc_offset:
            frames = frames - frames.mean(axis=-1, keepdims=True)
        spectrum = np.fft.rfft(frames * self._numpy_window, n=c.n_fft)
        power = torch.from_numpy(spectrum.real * spectrum.real + spectrum.imag * spectrum.imag)
        # the product in torch: numpy's OpenBLAS would start threads of its own beside torch.set_num_threads
        mel = (power @ self.fbank.cpu()).numpy()
        return np.log(mel + np.float32(c.log_floor)).swapaxes(-1, -2)

    @property
    def silence_value(self) -> float:
        """The log-mel value of digital silence (what every band of an all-zero frame holds)."""
        return float(torch.log(torch.tensor(self.config.log_floor)))


class EmbeddingWithLogMel(nn.Module):
    """The speech embedding fused with the log-mel bands it cannot hear: audio (..., n_samples) → (..., 136,
    n_frames), one frame per 80 ms. Rows 0-95 are `embedding.SpeechEmbedding`'s frame i (samples [i*1280,
    i*1280 + 12512)); rows 96-135 are 40 log-mel bands (25 ms windows, 10 ms hop, 20-7600 Hz) averaged over the
    22 log-mel frames in the central 240 ms of that audio. The embedding's own mel stops near 3.8 kHz, where
    "six", "seven", "yes" and "stop" carry their fricatives. Frame-local, so streaming stays exact."""

    summary_samples = 3840  # 240 ms
    summary_frames = 22  # log-mel frames (400 samples, hop 160) inside 3840 samples

    def __init__(self, remove_dc_offset: bool = False):
        super().__init__()
        from .embedding import SpeechEmbedding

        self.embedding = SpeechEmbedding(remove_dc_offset=remove_dc_offset)
        self.logmel = LogMel(FeatureConfig(remove_dc_offset=remove_dc_offset))
        self.hop_samples, self.window_samples = self.embedding.hop_samples, self.embedding.window_samples
        self.offset_samples = (self.window_samples - self.summary_samples) // 2
        self.logmel_step = self.hop_samples // self.logmel.config.hop_samples  # log-mel frames per embedding frame
        with torch.no_grad():
            silence = self(torch.zeros(self.window_samples))
        self.register_buffer("_silence", silence, persistent=False)

    def n_frames(self, n_samples: int) -> int:
        """Number of complete frames in `n_samples` samples."""
        return self.embedding.n_frames(n_samples)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(audio)
        n_frames = embedded.shape[-1]
        if n_frames == 0:
            return torch.zeros(*embedded.shape[:-2], embedded.shape[-2] + self.logmel.config.n_mels, 0,
                               device=embedded.device)
        return torch.cat([embedded, self.summary(audio, n_frames)], dim=-2)

    def summary(self, audio: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Only the log-mel rows: (..., 40, n_frames)."""
        n_frames = self.n_frames(audio.shape[-1]) if n_frames is None else n_frames
        start = self.offset_samples
        end = start + (n_frames - 1) * self.hop_samples + self.summary_samples
        bands = self.logmel(audio[..., start:end].to(self.logmel.fbank.device, torch.float32))
        return bands.unfold(-1, self.summary_frames, self.logmel_step).mean(-1)

    @torch.inference_mode()
    def numpy(self, audio: np.ndarray) -> np.ndarray:
        """`forward` for a numpy array (..., n_samples), on the module's device; returns float32 numpy."""
        return self(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).cpu().numpy()

    @property
    def silence_value(self) -> torch.Tensor:
        """The frame of all-zero audio, (136, 1)."""
        return self._silence


def make_frontend(config: FeatureConfig, cnn: dict | None = None, source: str = "<model>") -> nn.Module:
    """The frontend a FeatureConfig names: `LogMel`, the frozen pretrained `embedding.SpeechEmbedding` (which
    needs the `embedding` extra) or `EmbeddingWithLogMel`. Each maps audio (..., n_samples) → frames (..., n_mels,
    n_frames), frame i covering samples [i*hop, i*hop + window), and has `numpy` and `silence_value`.

    `cnn`: the checkpoint's own speech-embedding CNN (`LoadedModel.frontend_cnn`), required exactly when
    `config.embedding_cnn` is "checkpoint"; pass a model's as `make_frontend(model.features, model.frontend_cnn)`."""
    config.check_cnn_given(cnn is not None, source, "build a model's frontend with model.frontend(), i.e. "
                           "make_frontend(model.features, model.frontend_cnn)")
    if config.kind == "logmel":
        return LogMel(config)
    if config.kind == "embedding_logmel":
        return EmbeddingWithLogMel(remove_dc_offset=config.remove_dc_offset)
    from .embedding import SpeechEmbedding

    return SpeechEmbedding(remove_dc_offset=config.remove_dc_offset, cnn=cnn, source=source)


class StreamingLogMel:
    """Feed audio in chunks of any length; get each new log-mel frame exactly once.

    Keeps only the samples that belong to frames not yet complete (less than one window).
    """

    def __init__(self, frontend: LogMel):
        self.frontend = frontend
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples and the frame count."""
        self._pending = torch.zeros(0)
        self.n_frames_emitted = 0

    def feed(self, samples: torch.Tensor) -> torch.Tensor:
        """Add a 1-D float32 chunk; return the new frames as (n_mels, n_new_frames)."""
        c = self.frontend.config
        device = self.frontend.fbank.device
        buffer = torch.cat([self._pending.to(device), samples.to(device, torch.float32)])
        n_new = c.n_frames(len(buffer))
        if n_new == 0:
            self._pending = buffer
            return torch.zeros(c.n_mels, 0, device=device)
        frames = self.frontend(buffer[: (n_new - 1) * c.hop_samples + c.window_samples])
        self._pending = buffer[n_new * c.hop_samples :]
        self.n_frames_emitted += n_new
        return frames
