"""The drsn-asr command line, run as a user would (a real subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drsn_asr.runtime.audio import write_audio
from drsn_asr.cli import build_parser, format_detections
from drsn_asr.runtime.stream import Detection

DEMO = Path(__file__).resolve().parent.parent / "drsn_asr" / "assets" / "street_demo.flac"


def run(*args):
    return subprocess.run([sys.executable, "-m", "drsn_asr.cli", *args], capture_output=True, text=True, timeout=300)


def test_every_subcommand_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"transcribe", "train", "evaluate", "models"} <= set(commands)
    for name in commands:
        r = run(name, "--help")
        assert r.returncode == 0 and "usage: drsn-asr" in r.stdout, name


def test_transcribe_the_demo_prints_times_and_labels():
    r = run("transcribe", str(DEMO), "--threshold", "0.0")  # threshold 0: every model fires on this file
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines
    for line in lines:
        times, label, score = line.split("  ")
        start, end = (float(t) for t in times.split("–"))
        assert 0 <= start <= end <= 40
        assert label in build_model_labels()
        assert 0 <= float(score) <= 1


def build_model_labels():
    from drsn_asr import load_model

    return load_model(device="cpu").labels


@pytest.mark.parametrize("fmt", ["json", "csv", "srt"])
def test_machine_formats(fmt):
    r = run("transcribe", str(DEMO), "--threshold", "0.0", "--format", fmt)
    assert r.returncode == 0, r.stderr
    if fmt == "json":
        rows = json.loads(r.stdout)
        assert rows and {"file", "label", "score", "start_s", "end_s"} <= set(rows[0])
    elif fmt == "csv":
        assert r.stdout.splitlines()[0] == "file,start_s,end_s,label,score"
    else:
        assert r.stdout.startswith("1\n00:00:")


def test_format_detections_text_layout():
    text = format_detections([Detection("stop", 0.971, 12.34, 12.81)], "text")
    assert text == "12.34–12.81  stop  0.97\n"


def test_bad_file_gives_a_clear_message_and_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio at all")
    r = run("transcribe", str(bad))
    assert r.returncode == 1
    assert "not a readable audio file" in r.stderr and "Traceback" not in r.stderr


def test_jobs_transcribe_files_side_by_side_with_the_serial_output_in_order(tmp_path):
    import soundfile as sf

    audio, rate = sf.read(DEMO, dtype="float32")
    write_audio(tmp_path / "start.wav", audio[: 8 * rate], rate)
    (tmp_path / "bad.wav").write_text("not audio at all")
    files = [str(DEMO), str(tmp_path / "bad.wav"), str(tmp_path / "start.wav"), str(DEMO)]
    serial = run("transcribe", *files, "--threshold", "0.0")
    parallel = run("transcribe", *files, "--threshold", "0.0", "--jobs", "3")
    assert serial.returncode == parallel.returncode == 1  # the bad file, reported; the others transcribed
    assert parallel.stdout == serial.stdout
    headers = [line for line in serial.stdout.splitlines() if line.startswith("#")]
    assert headers == [f"# {f}" for f in files if "bad" not in f]
    assert serial.stdout.count("\n") > 8
    assert "not a readable audio file" in parallel.stderr and "Traceback" not in parallel.stderr
    for bad_jobs in (["--jobs", "0"], ["--jobs", "2", "--device", "cuda"]):
        r = run("transcribe", str(DEMO), *bad_jobs)
        assert r.returncode == 2 and "--jobs" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_refuses_a_bad_hop_and_a_missing_folder_with_a_message(tmp_path):
    (tmp_path / "yes").mkdir()
    write_audio(tmp_path / "yes" / "a.wav", np.zeros(16000, np.float32), 16000)
    r = run("evaluate", str(tmp_path), "--hop-ms", "25", "--model", "logmel")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "multiple of 10 ms, e.g. hop_ms=20" in r.stderr
    from drsn_asr import load_model

    r = run("evaluate", str(tmp_path), "--hop-ms", "100")  # the default model's frames may be 80 ms long
    frame_ms = load_model(device="cpu").features.hop_ms
    if 100 % frame_ms:
        assert r.returncode == 1 and f"multiple of {frame_ms:g} ms" in r.stderr and "Traceback" not in r.stderr
    r = run("evaluate", str(tmp_path / "missing"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "missing" in r.stderr


def test_unknown_model_lists_the_shipped_ones():
    r = run("transcribe", str(DEMO), "--model", "nope")
    assert r.returncode != 0
    assert "default" in r.stderr and "Traceback" not in r.stderr


def test_stereo_44k_file_is_transcribed_like_mono_16k(tmp_path):
    from drsn_asr.runtime.audio import read_audio, resample
    import soundfile as sf

    audio = read_audio(DEMO)[: 16000 * 8]
    sf.write(tmp_path / "st.wav", np.stack([resample(audio, 16000, 44100)] * 2, axis=1), 44100)
    write_audio(tmp_path / "mono.wav", audio)
    a = run("transcribe", str(tmp_path / "mono.wav"), "--threshold", "0", "--format", "json")
    b = run("transcribe", str(tmp_path / "st.wav"), "--threshold", "0", "--format", "json")
    la = [d["label"] for d in json.loads(a.stdout)]
    lb = [d["label"] for d in json.loads(b.stdout)]
    assert la == lb and la


def test_python_dash_m_is_the_cli_and_the_version_is_written_once():
    import importlib.metadata
    import subprocess
    import sys

    import drsn_asr

    out = subprocess.run([sys.executable, "-m", "drsn_asr", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"drsn-asr {drsn_asr.__version__}"
    assert importlib.metadata.version("drsn-asr") == drsn_asr.__version__  # pyproject.toml reads it from the package
    bad = subprocess.run([sys.executable, "-m", "drsn_asr", "no-such-command"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
