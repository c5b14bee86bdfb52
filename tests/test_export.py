"""ONNX and TorchScript export: parity with the torch model on real audio, embedded metadata, the example script.

The log-mel model (`logmel`) is exported once per format (through the CLI) and shared by the tests.
"""

import importlib.resources
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import drsn_asr
from drsn_asr.runtime.audio import read_audio, write_audio
from drsn_asr.cli import main
from drsn_asr.runtime.config import to_dict
from drsn_asr.tools.export import AudioClassifier, export_model, parity, read_metadata, run_exported

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]  # torch.jit.* deprecated upstream

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
PARITY_TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return drsn_asr.load_model("logmel", device="cpu")  # export writes log-mel models (the frontend goes in the file)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        assert main(["export", "--format", fmt, "logmel", str(out / name)]) == 0
    return out


@pytest.fixture(scope="module")
def windows():
    """1 s windows of real speech: each word of the shipped street recording, and clean held-out FSDD digits."""
    resource = importlib.resources.files("drsn_asr") / "assets"
    with importlib.resources.as_file(resource / "street_demo.flac") as path:
        street = read_audio(path)
    words = json.loads((resource / "street_demo.json").read_text())["words"]
    out = []
    for w in words:
        start = max(0, min(len(street) - 16000, int(((w["start_s"] + w["end_s"]) / 2 - 0.5) * 16000)))
        out.append(street[start : start + 16000])
    for clip in sorted(FSDD.glob("*_theo_0.wav")) + sorted(FSDD.glob("*_lucas_0.wav")) if FSDD.is_dir() else []:
        x = read_audio(clip)[:16000]
        out.append(np.pad(x, (max(0, (16000 - len(x)) // 2), 16000 - len(x) - max(0, (16000 - len(x)) // 2))))
    out.append(np.zeros(16000, np.float32))  # digital silence: the log floor
    return np.stack(out).astype(np.float32)


def test_export_writes_only_the_files_asked_for(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["model.onnx", "model.pt"]  # no temp files left


def test_onnx_takes_raw_audio_and_matches_torch_on_real_audio(model, exported, windows):
    assert len(windows) >= 10
    graph = onnx.load(str(exported / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["audio"] and [o.name for o in graph.output] == ["probs"]
    assert "DFT" in {n.op_type for n in graph.node}  # the frontend is inside the graph
    assert parity(model, exported / "model.onnx", windows) <= PARITY_TOL
    single = run_exported(exported / "model.onnx", windows[:1])  # any batch size
    assert single.shape == (1, len(model.labels)) and abs(single.sum() - 1) < 1e-5


def test_onnx_parity_holds_with_sharp_outputs(model, exported, windows, tmp_path):
    """Scaling the last layer makes the probabilities depend strongly on every upstream value (frontend included),
    so a mismatch anywhere would show. The scale is the largest of a few that does not saturate the softmax
    (an untrained model needs a large one, a trained one is sharp already)."""
    proto = onnx.load(str(exported / "model.onnx"))
    by_name = {t.name: t for t in proto.graph.initializer}
    if not {"net.fc.weight", "net.fc.bias"} <= set(by_name):
        pytest.skip("the exporter renamed the classifier's weights")
    for scale in (30.0, 10.0, 3.0, 1.0):
        torch_model = AudioClassifier(model)
        with torch.no_grad():
            torch_model.net.fc.weight *= scale
            torch_model.net.fc.bias *= scale
            expected = torch_model(torch.from_numpy(windows)).numpy()
        if np.std(expected.max(axis=1)) > 1e-3:
            break
    assert np.std(expected.max(axis=1)) > 1e-3  # outputs do vary
    for name in ("net.fc.weight", "net.fc.bias"):
        scaled = onnx.numpy_helper.to_array(by_name[name]) * np.float32(scale)
        by_name[name].CopyFrom(onnx.numpy_helper.from_array(scaled, name))
    onnx.save(proto, str(tmp_path / "sharp.onnx"))
    got = run_exported(tmp_path / "sharp.onnx", windows)
    assert np.abs(got - expected).max() <= PARITY_TOL


def test_onnx_metadata_describes_the_model(model, exported):
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == model.labels
    assert json.loads(meta["feature_config"]) == to_dict(model.features)
    assert int(meta["sample_rate"]) == 16000 and int(meta["window_samples"]) == 16000
    assert meta["frontend"] and meta["producer"].startswith("drsn-asr")
    assert read_metadata(exported / "model.onnx") == meta


def test_torchscript_loads_with_torch_jit_and_matches(model, exported, windows):
    files = {"drsn_asr.json": ""}
    scripted = torch.jit.load(str(exported / "model.pt"), map_location="cpu", _extra_files=files)
    meta = json.loads(files["drsn_asr.json"])
    assert json.loads(meta["labels"]) == model.labels
    assert json.loads(meta["feature_config"]) == to_dict(model.features)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        got = scripted(torch.from_numpy(windows)).numpy()
        expected = AudioClassifier(model)(torch.from_numpy(windows)).numpy()
    assert np.abs(got - expected).max() <= PARITY_TOL


def test_bad_format_is_a_clear_error(model, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of onnx, torchscript"):
        export_model(model, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(SystemExit) as e:
        main(["export", "--format", "tflite", "default", str(tmp_path / "m.tflite")])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "no-such-model", str(tmp_path / "m.onnx")]) == 1
    assert "no model named 'no-such-model'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_example_script_runs_without_drsn_asr(model, exported, windows, tmp_path):
    audio = tmp_path / "clip.wav"
    write_audio(audio, windows[:4].reshape(-1))  # 4 s of real speech
    blocked = ("import runpy, sys; sys.modules['drsn_asr'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", blocked, str(REPO / "pipelines" / "onnx_example.py"),
                          str(exported / "model.onnx"), str(audio), "--threshold", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines, "threshold 0 must print detections"
    for line in lines:
        time_s, unit, label, score = line.split()
        assert unit == "s" and label in model.labels and 0 <= float(time_s) <= 4 and 0 <= float(score) <= 1
