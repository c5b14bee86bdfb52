"""Deep Residual Shrinkage Network (Zhao et al., IEEE TII 2020) over log-mel (mel × time), and its ablations.

Residual shrinkage building unit (RSBU), on the residual branch output x:
    A = GAP(|x|)                                  per channel, per sample
    α = sigmoid(FC → BN → ReLU → FC (A))          in (0, 1)
    τ = α · A            (CW: one τ per channel and sample)
    τ = α · mean_c(A)    (CS: one τ per sample, shared by all channels)
    y = sign(x) · max(|x| − τ, 0)
    out = y + shortcut(input)
The same backbone builds as a plain ResNet (no shrinkage) or an SE-ResNet (x · sigmoid(FC(GAP(x)))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FeatureConfig, ModelConfig


def soft_threshold(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """sign(x) · max(|x| − τ, 0); its gradient w.r.t. x is 1 where |x| > τ and 0 elsewhere."""
    return torch.sign(x) * F.relu(x.abs() - tau)


class Threshold(nn.Module):
    """Learns τ from the residual features x (B, C, H, W); returns τ shaped (B, C, 1, 1) or (B, 1, 1, 1).

    A separate module so that forward hooks can capture τ without repeating its math.
    """

    def __init__(self, channels: int, per_channel: bool, reduction: int):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.per_channel = per_channel
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels if per_channel else 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        abs_mean = x.abs().mean(dim=(2, 3))  # A: (B, C)
        alpha = torch.sigmoid(self.fc(abs_mean))  # (B, C) or (B, 1)
        scale = abs_mean if self.per_channel else abs_mean.mean(dim=1, keepdim=True)
        return (alpha * scale)[:, :, None, None]


class Shrinkage(nn.Module):
    """Soft thresholding with a learned, input-dependent τ (the 'shrinkage' of an RSBU)."""

    def __init__(self, channels: int, per_channel: bool, reduction: int):
        super().__init__()
        self.threshold = Threshold(channels, per_channel, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_threshold(x, self.threshold(x))


class SqueezeExcite(nn.Module):
    """Channel re-weighting x · sigmoid(FC → ReLU → FC (GAP(x))) — the SE-ResNet ablation."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]


def _branch_end(block: str, channels: int, reduction: int) -> nn.Module:
    if block == "drsn_cw":
        return Shrinkage(channels, per_channel=True, reduction=reduction)
    if block == "drsn_cs":
        return Shrinkage(channels, per_channel=False, reduction=reduction)
    if block == "se_resnet":
        return SqueezeExcite(channels, reduction)
    return nn.Identity()


class ResidualUnit(nn.Module):
    """Pre-activation residual unit BN→ReLU→Conv→BN→ReLU→Conv, then shrinkage / SE / nothing, plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | tuple[int, int], block: str, reduction: int,
                 kernel: int | tuple[int, int] = 3):
        super().__init__()
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel, padding=padding, bias=False)
        self.branch_end = _branch_end(block, out_channels, reduction)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.relu(self.bn1(x)))
        r = self.conv2(F.relu(self.bn2(r)))
        return self.branch_end(r) + self.shortcut(x)


def residual_stages(config: ModelConfig, time_only: bool) -> nn.Sequential:
    """The stages of residual units after the stem: 3x3 convolutions over (mel × time), or with `time_only`
    1x3 convolutions whose strides apply to time alone (a frame vector has no frequency axis)."""
    units: list[nn.Module] = []
    channels = config.stem_channels
    for out_channels, n_blocks, stride in zip(config.stage_channels, config.stage_blocks, config.stage_strides):
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            units.append(ResidualUnit(channels, out_channels, (1, s) if time_only else s, config.block,
                                      config.reduction, kernel=(1, 3) if time_only else 3))
            channels = out_channels
    return nn.Sequential(*units)


class _ResidualClassifier(nn.Module):
    """What KeywordNet and SequenceNet share: the subclass's input BatchNorm and stem, then stages of residual
    units, then BN→ReLU→GAP→FC."""

    def __init__(self, config: ModelConfig, features: FeatureConfig, n_classes: int, input_bn: nn.Module,
                 stem: nn.Module, time_only: bool):
        super().__init__()
        self.config = config
        self.features = features
        self.n_classes = n_classes
        self.input_bn = input_bn
        self.stem = stem
        self.units = residual_stages(config, time_only)
        channels = config.stage_channels[-1]
        self.head_bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(channels, n_classes)

    @property
    def window_frames(self) -> int:
        """Number of frames in one classification window."""
        return self.features.n_frames(round(self.config.window_s * self.features.sample_rate))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output (B, C, H, T) → class logits (B, n_classes)."""
        x = self.units(x)
        x = F.relu(self.head_bn(x)).mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class KeywordNet(_ResidualClassifier):
    """Stem conv → stages of residual units → BN→ReLU→GAP→FC. Input log-mel (B, n_mels, n_frames)."""

    def __init__(self, config: ModelConfig, features: FeatureConfig, n_classes: int):
        in_channels = 1 + config.relative_input + config.floor_input
        super().__init__(
            config, features, n_classes,
            nn.BatchNorm2d(in_channels),  # log-mel values sit around -14..5: normalise before the stem
            nn.Conv2d(in_channels, config.stem_channels, 3, stride=config.stem_stride, padding=1, bias=False),
            time_only=False,
        )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, n_frames) → class logits (B, n_classes)."""
        return self.classify(self.stem(self.input_bn(stem_input(logmel, self.config.relative_input,
                                                                 self.config.floor_input))))


class SequenceNet(_ResidualClassifier):
    """The DRSN head over a sequence of frame vectors (B, n_features, n_frames), e.g. speech embeddings: residual
    shrinkage units as the paper defines them, 1-D over time (convolutions of `kernel` frames across all feature
    channels; CW: one threshold per channel), then BN→ReLU→GAP→FC. The same `ModelConfig` fields as KeywordNet:
    `stem_channels` (a 1-frame projection of the features), `stage_*`, `block`, `reduction`, `dropout`,
    `window_s`; strides apply to time only."""

    def __init__(self, config: ModelConfig, features: FeatureConfig, n_classes: int):
        super().__init__(config, features, n_classes, nn.BatchNorm2d(features.n_mels),
                         nn.Conv2d(features.n_mels, config.stem_channels, 1, bias=False), time_only=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, n_features, n_frames) → class logits (B, n_classes)."""
        return self.classify(self.stem(self.input_bn(frames.unsqueeze(2))))  # (B, C, 1, T): time is the only axis


def build_net(config: ModelConfig, features: FeatureConfig, n_classes: int) -> KeywordNet | SequenceNet:
    """The network for a frontend: KeywordNet (2-D over mel × time) for log-mel, SequenceNet (1-D over time) for
    a frontend whose frames are vectors without a frequency axis (speech embeddings)."""
    if features.kind == "logmel":
        return KeywordNet(config, features, n_classes)
    return SequenceNet(config, features, n_classes)


def stem_input(logmel: torch.Tensor, relative: bool, floor: bool = False) -> torch.Tensor:
    """(B, n_mels, n_frames) → (B, 1–3, n_mels, n_frames): the log-mel; with `relative` also the log-mel minus
    each band's mean over the window; with `floor` also the log-mel minus each band's minimum over the window.
    The relative view is blind to the input level, to the channel's colouring (a telephone band) and to the level
    of noise that is steady over the window; the first keeps the absolute levels that tell speech from silence.
    The floor view is each band's height above its quietest frame: for noise that is steady over the window that
    floor is the noise, so the view reads as a per-band log SNR (a minimum-statistics noise estimate, which the
    mean is not: a word raises a band's mean but rarely its minimum)."""
    x = logmel.unsqueeze(1)
    views = [x]
    if relative:
        views.append(x - x.mean(dim=3, keepdim=True))
    if floor:
        views.append(x - x.amin(dim=3, keepdim=True))
    return torch.cat(views, dim=1) if len(views) > 1 else x


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
