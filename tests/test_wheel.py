"""The package as a user installs it: the wheel built from this checkout, in a fresh virtual environment outside
it, with the runtime dependencies only, beside a torch other than the development pin (2.13.0, a CPU build)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OTHER_TORCH = "torch==2.13.0"  # pyproject.toml accepts >=2.11; constraints.txt pins 2.14.1 for development


def _run(args, cwd=None, timeout=900):
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out.stdout


@pytest.mark.slow
def test_the_wheel_installs_with_its_runtime_dependencies_beside_another_torch_and_transcribes(tmp_path):
    # from a copy: setuptools leaves a build/ folder beside the sources, whose stale files a later wheel would take
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "data", "runs", "build", "models", "docs",
                                                                 "*.egg-info", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source])
    wheel = next((tmp_path / "dist").glob("drsn_asr-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    pip, python = venv / "bin" / "pip", venv / "bin" / "python"
    torch_install = subprocess.run([pip, "install", "-q", OTHER_TORCH], capture_output=True, text=True, timeout=900)
    if torch_install.returncode != 0:
        pytest.skip(f"{OTHER_TORCH} is not to be had here: {torch_install.stderr[-300:]}")
    _run([pip, "install", "-q", wheel])  # the runtime dependencies, and nothing of the extras
    versions = _run([python, "-c", "import torch, drsn_asr; print(torch.__version__, drsn_asr.__version__)"]).split()
    assert versions[0].startswith("2.13.0"), versions  # the wheel accepted the torch that was there
    for extra in ("matplotlib", "pocketsphinx", "piper", "pytest", "onnxscript", "livekit.wakeword"):
        assert subprocess.run([python, "-c", f"import {extra}"], capture_output=True).returncode != 0, extra

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    demo = shutil.copy(REPO / "drsn_asr" / "assets" / "street_demo.flac", elsewhere / "street.flac")
    printed = _run([venv / "bin" / "drsn-asr", "transcribe", demo], cwd=elsewhere)
    lines = [line for line in printed.splitlines() if "–" in line]
    assert len(lines) >= 5, printed  # the shipped default model, loaded from the installed package
    assert _run([python, "-m", "drsn_asr", "--version"], cwd=elsewhere).strip() == f"drsn-asr {versions[1]}"
    logmel = _run([python, "-c", "import drsn_asr; print(len(drsn_asr.transcribe('street.flac', model='logmel')))"],
                  cwd=elsewhere)
    assert int(logmel) >= 5
    assert (venv / "lib").exists() and not list(elsewhere.glob("*.pt"))  # nothing written beside the user's audio
