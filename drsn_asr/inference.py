"""An inference-only form of KeywordNet: the same function, fewer and cheaper operations per window.

At one thread and one window per hop the stream's cost is mostly per-operation overhead, not arithmetic
(~5 M multiply-adds spread over ~90 small ops and ~40 module calls). `FoldedNet` keeps the arithmetic and
drops the overhead:
- every BatchNorm that directly follows a conv or linear layer is folded into that layer's weights and bias
  (the residual branch's conv1→BN, the shortcut's conv→BN, the threshold FC's linear→BN);
- the remaining BatchNorms (before a ReLU, after an addition) become one precomputed scale and shift;
- the forward is one straight-line function of tensors, with no module dispatch or hooks;
- activations after the stem are channels-last, which sends the small 3x3 convs to oneDNN's faster kernels.
Its outputs equal the module's up to float rounding (~1e-7 relative). Folding needs eval-mode statistics, so a
network in training mode, or a subclass with a forward of its own, is used as it is.

Measured at 1 thread (docs/performance.md): 1.65× faster than the module per window at batch 1, 1.3× at
batch 64. Tried and not kept: TorchScript trace+freeze (about the same gain, but deprecated in this torch),
torch.compile (about the same gain after a minute of compiling), channels_last on the module alone (less
gain), bfloat16 on the CPU (no gain at batch 1; faster at batch 16, but scores move by ~1e-3).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .model import KeywordNet, Shrinkage, SqueezeExcite, stem_input

CHANNELS_LAST = torch.channels_last


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale.detach().clone(), (bn.bias - bn.running_mean * scale).detach().clone()


def _fold(layer: nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of `bn(layer(x))` as one layer."""
    scale, shift = _bn_affine(bn)
    weight = layer.weight * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
    bias = shift if layer.bias is None else layer.bias * scale + shift
    return weight.detach().contiguous(), bias.detach().contiguous()


class _Unit:
    """One ResidualUnit with its BatchNorms folded."""

    def __init__(self, unit: nn.Module):
        self.bn1 = tuple(t.view(1, -1, 1, 1) for t in _bn_affine(unit.bn1))
        weight, bias = _fold(unit.conv1, unit.bn2)
        self.conv1 = (weight.contiguous(memory_format=CHANNELS_LAST), bias)
        self.stride = unit.conv1.stride
        self.conv2 = unit.conv2.weight.detach().contiguous(memory_format=CHANNELS_LAST)
        self.shortcut = None
        if not isinstance(unit.shortcut, nn.Identity):
            weight, bias = _fold(unit.shortcut[0], unit.shortcut[1])
            self.shortcut = (weight.contiguous(memory_format=CHANNELS_LAST), bias)
        end = unit.branch_end
        self.kind = "shrink" if isinstance(end, Shrinkage) else "se" if isinstance(end, SqueezeExcite) else "none"
        if self.kind == "shrink":
            fc = end.threshold.fc
            self.fc1, self.fc2 = _fold(fc[0], fc[1]), (fc[3].weight.detach(), fc[3].bias.detach())
            self.per_channel = end.threshold.per_channel
        elif self.kind == "se":
            self.fc1, self.fc2 = (end.fc[0].weight.detach(), end.fc[0].bias.detach()), (end.fc[2].weight.detach(), end.fc[2].bias.detach())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.bn1
        r = F.conv2d(torch.relu(x * scale + shift), self.conv1[0], self.conv1[1], self.stride, 1)
        r = F.conv2d(torch.relu(r), self.conv2, None, 1, 1)
        if self.kind == "shrink":
            abs_mean = r.abs().mean(dim=(2, 3))
            alpha = torch.sigmoid(F.linear(torch.relu(F.linear(abs_mean, *self.fc1)), *self.fc2))
            tau = alpha * (abs_mean if self.per_channel else abs_mean.mean(dim=1, keepdim=True))
            r = torch.sign(r) * torch.relu(r.abs() - tau[:, :, None, None])
        elif self.kind == "se":
            r = r * torch.sigmoid(F.linear(torch.relu(F.linear(r.mean(dim=(2, 3)), *self.fc1)), *self.fc2))[:, :, None, None]
        return r + (x if self.shortcut is None else F.conv2d(x, self.shortcut[0], self.shortcut[1], self.stride))


class FoldedNet:
    """Log-mel (B, n_mels, n_frames) → logits, like `net` in eval mode, built from its current weights."""

    def __init__(self, net: KeywordNet):
        if net.training:
            raise ValueError("FoldedNet needs a network in eval mode (its BatchNorm statistics are folded in)")
        self.input_bn = tuple(t.view(1, -1, 1, 1) for t in _bn_affine(net.input_bn))
        self.stem = net.stem.weight.detach()
        self.stem_stride = net.stem.stride
        self.relative_input = net.config.relative_input
        self.units = [_Unit(u) for u in net.units]
        self.head_bn = tuple(t.view(1, -1, 1, 1) for t in _bn_affine(net.head_bn))
        self.fc = (net.fc.weight.detach(), net.fc.bias.detach())

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        scale, shift = self.input_bn
        x = F.conv2d(stem_input(logmel, self.relative_input) * scale + shift, self.stem, None, self.stem_stride, 1)
        x = x.contiguous(memory_format=CHANNELS_LAST)  # oneDNN's fast path for the small 3x3 convs that follow
        for unit in self.units:
            x = unit(x)
        scale, shift = self.head_bn
        return F.linear(torch.relu(x * scale + shift).mean(dim=(2, 3)), *self.fc)


_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, FoldedNet]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _signature(net: nn.Module) -> tuple:
    """Changes whenever a weight or statistic is modified in place, replaced, or moved."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*net.parameters(), *net.buffers()))


def inference_forward(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fastest exact-up-to-rounding forward of `net` for inference, from its weights as they are now.

    A plain KeywordNet in eval mode gets a FoldedNet, cached per network (rebuilt when its weights change);
    anything else is returned as it is. Thread-safe.
    """
    if type(net) is not KeywordNet or net.training:
        return net
    signature = _signature(net)
    with _lock:
        cached = _cache.get(net)
        if cached is None or cached[0] != signature:
            with torch.no_grad():
                cached = (signature, FoldedNet(net))
            _cache[net] = cached
    return cached[1]
