"""Interruptions: Ctrl-C during training (resumes from its last checkpoint, no epoch lost or repeated) and
during live capture (stops cleanly, with its summary). Both run the real command line in a child process.
"""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_train import _tiny_recipe

from drsn_asr.runtime.checkpoint import read_checkpoint

CLI = [sys.executable, "-m", "drsn_asr.cli"]


def _default_sigint() -> None:
    """In the child: Ctrl-C handled as usual, even when the tests run from a shell's background job (which starts
    every child with SIGINT ignored, so Python would not turn it into KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ---- Ctrl-C during training ----------------------------------------------------------------------------------
def _epochs_printed(text):
    return [json.loads(line)["epoch"] for line in text.splitlines() if line.startswith("{")]


def test_ctrl_c_during_training_then_resume_loses_and_repeats_no_epoch(tmp_path):
    recipe = _tiny_recipe(tmp_path, epochs=200)
    run_dir = tmp_path / "run"
    with open(tmp_path / "stderr1", "w") as err:
        proc = subprocess.Popen([*CLI, "train", "--config", str(recipe)], stdout=subprocess.PIPE, stderr=err, text=True,
                                preexec_fn=_default_sigint)
        try:
            first = proc.stdout.readline()  # the first epoch's line: its checkpoint follows
            assert first.startswith("{"), (tmp_path / "stderr1").read_text()[-2000:]
            deadline = time.monotonic() + 30
            while not (run_dir / "last.pt").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    stderr = (tmp_path / "stderr1").read_text()
    assert proc.returncode == 130 and "interrupted" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    interrupted_at = read_checkpoint(run_dir / "last.pt")["epoch"]
    assert 1 <= interrupted_at < 200
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp file left
    # resume: two more epochs, continuing from the last complete one
    r = subprocess.run([*CLI, "train", "--config", str(recipe), "--epochs", str(interrupted_at + 2)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _epochs_printed(r.stdout) == [interrupted_at + 1, interrupted_at + 2]
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, interrupted_at + 3))
    assert read_checkpoint(run_dir / "last.pt")["epoch"] == interrupted_at + 2


# ---- Ctrl-C during live capture ------------------------------------------------------------------------------
def test_ctrl_c_during_listen_stops_cleanly_with_a_summary(tmp_path):
    from test_microphone import PulseDaemon

    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio not installed (Debian: pulseaudio pulseaudio-utils)")
    daemon = PulseDaemon(tmp_path / "pulse")
    try:
        daemon.start()
    except RuntimeError as e:
        daemon.kill()
        pytest.skip(f"cannot start a private pulseaudio: {e}")
    try:
        with open(tmp_path / "stderr", "w+") as err:
            proc = subprocess.Popen([*CLI, "listen", "--device", "pulse"], env=daemon.env, stdout=subprocess.PIPE,
                                    stderr=err, text=True, preexec_fn=_default_sigint)
            try:
                deadline = time.monotonic() + 60
                while "listening on" not in (tmp_path / "stderr").read_text() and time.monotonic() < deadline:
                    assert proc.poll() is None, (tmp_path / "stderr").read_text()
                    time.sleep(0.05)
                time.sleep(2.0)  # capture (PulseAudio's first blocks can take most of a second on a busy 2-core box)
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=10)
            finally:
                proc.kill()
        stderr = (tmp_path / "stderr").read_text()
    finally:
        daemon.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = [line for line in stderr.splitlines() if line.startswith("listened ")]
    assert summary and "0 dropped block(s)" in summary[0], stderr
    assert float(summary[0].split()[1]) >= 0.5  # the audio captured before Ctrl-C was recognized
