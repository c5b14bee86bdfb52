"""Log-mel frontend: a torch module for batches and an incremental form for streams.

Frame i covers samples [i*hop, i*hop + window) with no centre padding, so a stream can emit each frame as soon
as its last sample has arrived and the frames equal those of the whole signal.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from .config import FeatureConfig


class LogMel(nn.Module):
    """Audio (..., n_samples) float32 → log-mel (..., n_mels, n_frames)."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.config = config
        if config.window_samples > config.n_fft:
            raise ValueError(f"features.window_ms gives {config.window_samples} samples > n_fft={config.n_fft}")
        self.register_buffer("window", torch.hann_window(config.window_samples, periodic=True), persistent=False)
        fbank = AF.melscale_fbanks(
            n_freqs=config.n_fft // 2 + 1,
            f_min=config.f_min_hz,
            f_max=config.f_max_hz,
            n_mels=config.n_mels,
            sample_rate=config.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
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


def make_frontend(config: FeatureConfig) -> nn.Module:
    """The frontend a FeatureConfig names: `LogMel`, or the frozen pretrained `embedding.SpeechEmbedding` (which
    needs the `embedding` extra). Both map audio (..., n_samples) → frames (..., n_mels, n_frames), frame i
    covering samples [i*hop, i*hop + window), and have `numpy` and `silence_value`."""
    if config.kind == "logmel":
        return LogMel(config)
    from .embedding import SpeechEmbedding

    return SpeechEmbedding(remove_dc_offset=config.remove_dc_offset)


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
