"""Inference-only forms of KeywordNet: the same function, fewer and cheaper operations per window.

At one thread and one window per hop the stream's cost is mostly per-operation overhead, not arithmetic
(~5 M multiply-adds spread over ~90 small ops and ~40 module calls). `FoldedNet` keeps the arithmetic and
drops the overhead:
- every BatchNorm that directly follows a conv or linear layer is folded into that layer's weights and bias
  (the residual branch's conv1→BN, the shortcut's conv→BN, the threshold FC's linear→BN);
- the remaining BatchNorms (before a ReLU, after an addition) become one precomputed scale and shift;
- the forward is one straight-line function of tensors, with no module dispatch or hooks;
- activations after the stem are channels-last, which sends the small 3x3 convs to oneDNN's faster kernels.
`OnnxNet` runs FoldedNet's graph in ONNX Runtime: one native call per batch of windows instead of ~90 torch
dispatches. Outputs equal the module's up to float rounding (~1e-6 relative). Folding needs eval-mode
statistics, so a network in training mode, or a subclass with a forward of its own, is used as it is.

Measured at 1 thread (docs/performance.md): FoldedNet 2.0× faster than the module per window at batch 1, 1.2×
at batch 64; OnnxNet a further 2.2× at batch 1 (about even at batch 64). Tried and not kept: TorchScript
trace+freeze (about FoldedNet's gain, but deprecated in this torch), torch.compile (about the same gain after a
minute of compiling), channels_last on the module alone (less gain), bfloat16 on the CPU (no gain at batch 1;
faster at batch 16, but scores move by ~1e-3).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import weakref
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import KeywordNet, SequenceNet, Shrinkage, SqueezeExcite, stem_input

CHANNELS_LAST = torch.channels_last
ONNX_OPSET, ONNX_IR_VERSION = 17, 8  # ReduceMean with an axes attribute; IR 8 loads in every onnxruntime >= 1.14


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
        self.padding = unit.conv1.padding  # 1 (3x3 over mel × time) or (0, 1) (1x3 over time)
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
        r = F.conv2d(torch.relu(x * scale + shift), self.conv1[0], self.conv1[1], self.stride, self.padding)
        r = F.conv2d(torch.relu(r), self.conv2, None, 1, self.padding)
        if self.kind == "shrink":
            abs_mean = r.abs().mean(dim=(2, 3))
            alpha = torch.sigmoid(F.linear(torch.relu(F.linear(abs_mean, *self.fc1)), *self.fc2))
            tau = alpha * (abs_mean if self.per_channel else abs_mean.mean(dim=1, keepdim=True))
            tau = tau[:, :, None, None]
            r = r - torch.minimum(torch.maximum(r, -tau), tau)  # = sign(r)·max(|r| − τ, 0), in fewer passes
        elif self.kind == "se":
            r = r * torch.sigmoid(F.linear(torch.relu(F.linear(r.mean(dim=(2, 3)), *self.fc1)), *self.fc2))[:, :, None, None]
        return r + (x if self.shortcut is None else F.conv2d(x, self.shortcut[0], self.shortcut[1], self.stride))


class FoldedNet:
    """Log-mel (B, n_mels, n_frames) → logits, like `net` in eval mode, built from its current weights; for a
    SequenceNet, frame vectors (B, n_features, n_frames) (its input is one row of channels: no mel axis)."""

    def __init__(self, net: KeywordNet | SequenceNet):
        if net.training:
            raise ValueError("FoldedNet needs a network in eval mode (its BatchNorm statistics are folded in)")
        self.sequence = isinstance(net, SequenceNet)
        self.input_bn = tuple(t.view(1, -1, 1, 1) for t in _bn_affine(net.input_bn))
        self.stem = net.stem.weight.detach()
        self.stem_stride = net.stem.stride
        self.stem_padding = net.stem.padding
        self.relative_input = net.config.relative_input and not self.sequence
        self.floor_input = net.config.floor_input and not self.sequence
        self.units = [_Unit(u) for u in net.units]
        self.head_bn = tuple(t.view(1, -1, 1, 1) for t in _bn_affine(net.head_bn))
        self.fc = (net.fc.weight.detach(), net.fc.bias.detach())
        self.n_mels = net.features.n_mels

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        scale, shift = self.input_bn
        x = logmel.unsqueeze(2) if self.sequence else stem_input(logmel, self.relative_input, self.floor_input)
        x = F.conv2d(x * scale + shift, self.stem, None, self.stem_stride, self.stem_padding)
        x = x.contiguous(memory_format=CHANNELS_LAST)  # oneDNN's fast path for the small 3x3 convs that follow
        for unit in self.units:
            x = unit(x)
        scale, shift = self.head_bn
        return F.linear(torch.relu(x * scale + shift).mean(dim=(2, 3)), *self.fc)


class OnnxNet:
    """FoldedNet's graph run by ONNX Runtime on the CPU: the same arithmetic in one call instead of ~90 torch ops.

    At one window per hop the torch forward is mostly per-operation dispatch; ONNX Runtime runs the whole graph
    in one native call, with its own fused conv kernels (measured in docs/performance.md). The graph is built
    node by node from the folded weights (no tracing, so it takes milliseconds and always matches FoldedNet).
    Call it with a torch tensor for logits (`forward`'s contract), or use `probs` with numpy arrays.
    """

    def __init__(self, folded: FoldedNet, threads: int, batch_threads: int | None = None):
        self.folded = folded  # (a graph that embeds this one, e.g. embedding.HopSession, is built from it)
        self.session = cpu_session(_onnx_graph(folded), threads, batch_threads)

    def probs(self, logmel: np.ndarray) -> np.ndarray:
        """Log-mel (B, n_mels, n_frames) float32 → softmax posteriors (B, n_classes) float32."""
        return self.session.run(["probs"], {"logmel": np.ascontiguousarray(logmel, np.float32)})[0]

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(logmel.detach().cpu().numpy(), np.float32)
        return torch.from_numpy(self.session.run(["logits"], {"logmel": x})[0])


class GraphBuilder:
    """An ONNX graph written node by node: `const` adds a weight, `op` a node; `model` wraps them up."""

    def __init__(self):
        self.nodes, self.weights, self._counter = [], [], iter(range(1 << 30))

    def const(self, value: torch.Tensor | np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"w{next(self._counter)}"
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, kind: str, *inputs: str, out: str | None = None, **attributes) -> str:
        from onnx import helper

        out = out or f"t{next(self._counter)}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attributes))
        return out

    def model(self, name: str, inputs: list[tuple[str, list | None]], outputs: list[tuple[str, list | None]]):
        """The ModelProto of the nodes so far; inputs and outputs as (name, shape) of float tensors."""
        from onnx import TensorProto, helper

        values = [[helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in io] for io in (inputs, outputs)]
        graph = helper.make_graph(self.nodes, name, *values, self.weights)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION)


def cpu_session(model, threads: int, batch_threads: int | None = None):  # (onnx.ModelProto) -> session
    """An ONNX Runtime session on the CPU with `threads` intra-op threads that do not spin when idle; with
    `batch_threads` other than `threads`, a `BatchThreadedSession` that runs batches of BATCH_THREADS_MIN_ROWS
    rows or more on that many."""
    if batch_threads is not None and batch_threads != threads:
        return BatchThreadedSession(model, threads, batch_threads)
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not burn CPU
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# Rows from which a batch runs on `batch_threads`: on this 2-core host a hop of 32 streams took 157 µs a stream on
# 2 threads against 199 on one (idle; 180 against 191 with the other core busy), and 4 streams 263 against 233
# (docs/performance.md).
BATCH_THREADS_MIN_ROWS = 32


class BatchThreadedSession:
    """One graph as two ONNX Runtime sessions: `threads` intra-op threads for batches under
    BATCH_THREADS_MIN_ROWS rows (a few streams' hop, where more threads only wait for each other) and
    `batch_threads` from there (a server's step of many streams, which they split). `run` picks by the first
    input's rows; `for_batch(rows)` gives the session itself (for IO bindings)."""

    def __init__(self, model, threads: int, batch_threads: int):
        self.small, self.large = cpu_session(model, threads), cpu_session(model, batch_threads)

    def for_batch(self, rows: int):
        return self.large if rows >= BATCH_THREADS_MIN_ROWS else self.small

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.for_batch(len(next(iter(feeds.values())))).run(outputs, feeds)


def _onnx_graph(folded: FoldedNet):  # -> onnx.ModelProto
    g = GraphBuilder()
    onnx_nodes(folded, g, "logmel")
    n_classes = folded.fc[0].shape[0]
    return g.model("keyword_net", [("logmel", ["batch", folded.n_mels, "frames"])],
                   [(name, ["batch", n_classes]) for name in ("logits", "probs")])


def onnx_nodes(folded: FoldedNet, g: GraphBuilder, x: str) -> None:
    """FoldedNet's forward as nodes of `g` on input `x` (B, n_mels, n_frames), ending in "logits" and "probs"."""
    const, op = g.const, g.op

    def affine(x: str, scale_shift: tuple[torch.Tensor, torch.Tensor]) -> str:
        # as a depthwise 1x1 Conv, not Mul and Add: ONNX Runtime runs it in its blocked (NCHWc) layout with the
        # convolutions around it, and fuses a following Relu, where Mul and Add need the tensor reordered out
        # and back (docs/performance.md); the values are those of Mul and Add to float rounding (bit for bit on
        # the street demo)
        scale, shift = (t.reshape(-1) for t in scale_shift)
        return op("Conv", x, const(scale.reshape(-1, 1, 1, 1)), const(shift), group=len(scale), kernel_shape=[1, 1])

    def conv(x: str, weight: torch.Tensor, bias: torch.Tensor | None, stride, pad: int | tuple[int, int]) -> str:
        inputs = [x, const(weight.contiguous())] + ([const(bias)] if bias is not None else [])
        pad_h, pad_w = (pad, pad) if isinstance(pad, int) else pad
        return op("Conv", *inputs, strides=list(stride), pads=[pad_h, pad_w, pad_h, pad_w],
                  kernel_shape=list(weight.shape[2:]))

    def linear(x: str, weight_bias: tuple[torch.Tensor, torch.Tensor]) -> str:
        return op("Gemm", x, const(weight_bias[0]), const(weight_bias[1]), transB=1)

    def channel_vector(x: str) -> str:  # (B, C) → (B, C, 1, 1)
        return op("Unsqueeze", x, const(np.array([2, 3], np.int64)))

    x = op("Unsqueeze", x, const(np.array([2 if folded.sequence else 1], np.int64)))
    views = [x]
    if folded.relative_input:
        views.append(op("Sub", x, op("ReduceMean", x, axes=[3], keepdims=1)))
    if folded.floor_input:
        views.append(op("Sub", x, op("ReduceMin", x, axes=[3], keepdims=1)))
    if len(views) > 1:
        x = op("Concat", *views, axis=1)
    x = conv(affine(x, folded.input_bn), folded.stem, None, folded.stem_stride, folded.stem_padding)
    for unit in folded.units:
        r = conv(op("Relu", affine(x, unit.bn1)), *unit.conv1, unit.stride, unit.padding)
        r = conv(op("Relu", r), unit.conv2, None, (1, 1), unit.padding)
        if unit.kind == "shrink":
            magnitude = op("Abs", r)
            abs_mean = op("ReduceMean", magnitude, axes=[2, 3], keepdims=0)
            alpha = op("Sigmoid", linear(op("Relu", linear(abs_mean, unit.fc1)), unit.fc2))
            scale = abs_mean if unit.per_channel else op("ReduceMean", abs_mean, axes=[1], keepdims=1)
            tau = channel_vector(op("Mul", alpha, scale))
            # sign(r)·max(|r| − τ, 0) = r − clip(r, −τ, τ) for τ ≥ 0, exactly: three passes over r instead of four
            r = op("Sub", r, op("Min", op("Max", r, op("Neg", tau)), tau))
        elif unit.kind == "se":
            pooled = op("ReduceMean", r, axes=[2, 3], keepdims=0)
            r = op("Mul", r, channel_vector(op("Sigmoid", linear(op("Relu", linear(pooled, unit.fc1)), unit.fc2))))
        x = op("Add", r, x if unit.shortcut is None else conv(x, *unit.shortcut, unit.stride, 0))
    pooled = op("ReduceMean", op("Relu", affine(x, folded.head_bn)), axes=[2, 3], keepdims=0)
    op("Gemm", pooled, const(folded.fc[0]), const(folded.fc[1]), out="logits", transB=1)
    op("Softmax", "logits", out="probs", axis=1)


BACKENDS = ("auto", "torch", "onnxruntime")

_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, Callable]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def import_onnxruntime():  # -> the onnxruntime module
    """onnxruntime with its telemetry off: left on, importing it writes a device id under ~/.cache/Microsoft.
    (A user who sets ORT_DISABLE_TELEMETRY, or imports onnxruntime first, keeps their choice.)"""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def onnxruntime_available() -> bool:
    """Whether the onnxruntime backend can run here (packages onnx and onnxruntime installed)."""
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _signature(net: nn.Module) -> tuple:
    """Changes whenever a weight or statistic is modified in place, replaced, or moved."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*net.parameters(), *net.buffers()))


DEFAULT_THREADS = 1


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS tells it; else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """Run the block's torch operations on `n` intra-op threads, then restore the caller's setting; None leaves
    it as it is. torch keeps this setting per OS thread (OpenMP's and MKL's thread-local counts), so other
    threads of the process are not affected, and setting and restoring costs about a microsecond.

    Why the library picks its own: a stream's hop is a few small tensors, where extra intra-op threads spin and
    wait for each other instead of working (6-18x slower per hop on a loaded 2-core host; docs/performance.md).
    """
    saved = torch.get_num_threads()
    if n is None or n == saved:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def check_threads(threads: int | None) -> int | None:
    """`threads` as given, or a ValueError that says what is allowed."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int (intra-op threads for inference) or None (torch's own "
                         f"setting), got {threads!r}")
    return threads


def inference_forward(net: nn.Module, backend: str = "auto", threads: int | None = None,
                      batch_threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fastest exact-up-to-rounding forward of `net` for inference, from its weights as they are now.

    A plain KeywordNet or SequenceNet in eval mode gets an OnnxNet on the CPU when `backend` is "onnxruntime", or
    "auto" and onnxruntime is installed; a FoldedNet otherwise ("torch", or on a GPU). The ONNX Runtime session uses
    `threads` intra-op threads (None: as many as torch uses when it is made), and `batch_threads` for batches of
    BATCH_THREADS_MIN_ROWS windows or more (None: `threads`). Cached per network, backend and thread counts
    (rebuilt when the weights change); anything else is returned as it is. Thread-safe.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    first = next(net.parameters(), None)
    on_cpu = first is None or first.device.type == "cpu"
    if backend == "onnxruntime" and not onnxruntime_available():
        raise ValueError("backend='onnxruntime' needs the onnx and onnxruntime packages: pip install 'drsn-asr[fast]'")
    if backend == "onnxruntime" and not on_cpu:
        raise ValueError("backend='onnxruntime' runs on the CPU; load the model with device='cpu' or use backend='torch'")
    if type(net) not in (KeywordNet, SequenceNet) or net.training:
        return net
    use_onnx = on_cpu and (backend == "onnxruntime" or (backend == "auto" and onnxruntime_available()))
    threads = threads or torch.get_num_threads()
    kind = ("onnxruntime", threads, batch_threads) if use_onnx else ("torch", 0, None)  # a session per thread count
    signature = _signature(net)
    with _lock:
        built = _cache.setdefault(net, {})
        cached = built.get(kind)
        if cached is None or cached[0] != signature:
            with torch.no_grad():
                folded = FoldedNet(net)
                cached = (signature, OnnxNet(folded, threads, batch_threads) if use_onnx else folded)
            built[kind] = cached
    return cached[1]
