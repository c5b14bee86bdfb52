"""Files the library writes and the model it ships: a full disk leaves no half-written output (and keeps an
older version); a shipped model whose bytes differ from the SHA-256 recorded in the package is refused; and
the library writes nowhere but the paths it was given.

Outputs are written to a temp file beside the target and renamed only when complete (drsn_asr.runtime.fileio).
"""

import getpass
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pytest

import drsn_asr
from drsn_asr.runtime.audio import read_audio, write_audio
from drsn_asr.runtime.checkpoint import load_model, save_checkpoint
from drsn_asr.runtime.fileio import atomic_write

DEMO = Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac"


# ---- disk full ---------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB tmpfs, so writes fail with ENOSPC. Mounting needs root; the RLIMIT_FSIZE test runs anyway."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); see the file-size-limit test")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


def _big_noise(seconds=60):
    return (np.random.default_rng(0).standard_normal(16000 * seconds) * 0.1).astype(np.float32)


def _writers(model):
    """Each output the library writes, big enough not to fit in 64 KiB."""
    return {
        "wav": lambda d: write_audio(d / "out.wav", _big_noise()),
        "flac": lambda d: write_audio(d / "out.flac", _big_noise()),
        "ogg": lambda d: write_audio(d / "out.ogg", _big_noise()),
        "checkpoint": lambda d: save_checkpoint(d / "out.pt", model.net, model.labels, frontend_cnn=model.frontend_cnn),
        "json (evaluate --json, history.json)": lambda d: _write_text(d / "out.json", "[" + "0.5, " * 100000 + "0]"),
    }


def _write_text(path, text):
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def test_a_full_disk_leaves_no_half_written_output(full_disk):
    model = load_model(device="cpu")
    for name, write in _writers(model).items():
        with pytest.raises(OSError) as e:
            write(full_disk)
        assert "disk full" in str(e.value) or "No space left" in str(e.value), (name, e.value)
        assert os.listdir(full_disk) == [], (name, os.listdir(full_disk))  # no output, no temp file


def test_a_full_disk_keeps_the_previous_version_of_the_output(full_disk):
    small = (np.sin(np.arange(8000) / 7) * 0.3).astype(np.float32)
    write_audio(full_disk / "out.wav", small)
    before = (full_disk / "out.wav").read_bytes()
    with pytest.raises(OSError):
        write_audio(full_disk / "out.wav", _big_noise())
    assert (full_disk / "out.wav").read_bytes() == before
    assert np.abs(read_audio(full_disk / "out.wav") - small).max() < 1e-4
    assert os.listdir(full_disk) == ["out.wav"]


FSIZE_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    from pathlib import Path
    import numpy as np
    from drsn_asr.runtime.audio import write_audio
    from drsn_asr.runtime.checkpoint import load_model, save_checkpoint
    out, model = Path(sys.argv[1]), load_model(device="cpu")
    noise = (np.random.default_rng(0).standard_normal(16000 * 60) * 0.1).astype(np.float32)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-limit writes then fail with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    results = {}
    for name, write in {
        "wav": lambda: write_audio(out / "out.wav", noise),
        "flac": lambda: write_audio(out / "out.flac", noise),
        "ogg": lambda: write_audio(out / "out.ogg", noise),
        "checkpoint": lambda: save_checkpoint(out / "out.pt", model.net, model.labels, frontend_cnn=model.frontend_cnn),
    }.items():
        try:
            write()
            results[name] = "written"
        except OSError as e:
            results[name] = f"OSError: {e}"
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"
    print(json.dumps({"results": results, "left": sorted(os.listdir(out))}))
    """
)


def test_a_file_size_limit_leaves_no_half_written_output(tmp_path):
    """The same without root: RLIMIT_FSIZE makes writes past 64 KiB fail (EFBIG), in a child process."""
    r = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    for name, outcome in report["results"].items():
        assert outcome.startswith("OSError"), (name, outcome)
    assert report["left"] == []


# ---- the shipped model's SHA-256 ------------------------------------------------------------------------------
LOAD_SHIPPED = textwrap.dedent(
    """
    import json, drsn_asr
    try:
        print(json.dumps({"package": drsn_asr.__file__, "loaded": drsn_asr.load_model("default", device="cpu").source}))
    except ValueError as e:
        print(json.dumps({"package": drsn_asr.__file__, "error": str(e)}))
    """
)


def _package_copy(root: Path) -> Path:
    """A copy of the installed package under `root`, first on the path of a child process started there."""
    shutil.copytree(Path(drsn_asr.__file__).parent, root / "drsn_asr", ignore=shutil.ignore_patterns("__pycache__"))
    return root / "drsn_asr" / "assets" / "default.pt"


def _run_in(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _load_shipped(root: Path) -> dict:  # {"package": the imported drsn_asr, "loaded" or "error": ...}
    r = _run_in(root, "-c", LOAD_SHIPPED)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(root)), out  # the copy was imported, not the installed package
    return out


def test_a_tampered_shipped_model_is_refused(tmp_path):
    weights = _package_copy(tmp_path)
    assert _load_shipped(tmp_path)["loaded"] == "default"  # the copy itself is sound
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    r = _run_in(tmp_path, "-m", "drsn_asr.cli", "transcribe", str(DEMO))
    assert r.returncode == 2
    assert "fails its SHA-256 check" in r.stderr and "reinstall" in r.stderr and "Traceback" not in r.stderr


def test_the_recorded_digest_matches_the_shipped_file():
    from drsn_asr.runtime.checkpoint import _shipped_digests, available_models, sha256

    digests = _shipped_digests()
    for name in available_models():
        with as_file(files("drsn_asr") / "assets" / f"{name}.pt") as path:
            assert digests[f"{name}.pt"] == sha256(path)


# ---- writes only where told ----------------------------------------------------------------------------------
AUDITED = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    writes = []

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, (str, bytes, os.PathLike)) and (
                (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS)
            ):
                writes.append((event, os.fsdecode(path)))
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.link",
                       "os.symlink", "shutil.copyfile", "shutil.rmtree", "shutil.move", "tempfile.mkstemp",
                       "tempfile.mkdtemp"):
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)):
                    writes.append((event, os.fsdecode(a)))

    sys.addaudithook(hook)
    import torch
    import drsn_asr
    from drsn_asr.runtime.audio import audio_info, read_audio, stream_audio, write_audio
    from drsn_asr.runtime.checkpoint import save_checkpoint
    from drsn_asr.cli import main
    from drsn_asr.tools.export import export_model
    from drsn_asr.runtime.multistream import MultiStreamRecognizer
    from drsn_asr.training.train import load_train_config, train

    torch.set_num_threads(1)  # small inputs: more threads only contend
    inputs, out = Path(sys.argv[1]), Path(sys.argv[2])
    demo = inputs / "demo.flac"
    model = drsn_asr.load_model(device="cpu")
    audio = read_audio(demo)
    audio_info(demo)
    list(stream_audio(demo, block_s=1.0))
    drsn_asr.transcribe(demo, model=model)
    drsn_asr.transcribe(audio, model=model)
    rec = drsn_asr.Recognizer(model)
    rec.feed(audio)
    rec.flush()
    multi = MultiStreamRecognizer(model)
    multi.add_stream("a")
    multi.feed({"a": audio})
    write_audio(out / "audio" / "a.wav", audio)
    save_checkpoint(out / "model.pt", model.net, model.labels, frontend_cnn=model.frontend_cnn)
    drsn_asr.load_model(out / "model.pt", device="cpu")
    export_model(drsn_asr.load_model("logmel", device="cpu"), out / "model.ts", format="torchscript")
    for fmt in ("json", "csv"):
        main(["transcribe", str(demo), "--format", fmt])
    main(["evaluate", str(inputs / "clips"), "--json", str(out / "eval.json")])
    train(load_train_config(inputs / "tiny.yaml", {"optim": {"epochs": 1}}), progress=False)
    print(json.dumps(writes))
    """
)


def test_the_library_writes_only_where_it_was_told(tmp_path):
    """Every Python-level write (opens for writing, renames, removals, mkdirs, temp files) of a session that
    uses the whole library — loading, streaming, transcribing, evaluating, exporting, training — is audited
    (sys.addaudithook); all are inside the output paths given. HOME, TMPDIR and the working directory are
    fresh and must stay empty (this also catches writes made from C libraries)."""
    from test_train import _tiny_recipe

    inputs, out, home, tmp, cwd = (tmp_path / n for n in ("in", "out", "home", "tmp", "cwd"))
    for d in (inputs, out, home, tmp, cwd):
        d.mkdir()
    demo = read_audio(DEMO)
    write_audio(inputs / "demo.flac", demo[: 16000 * 6])
    for word in ("yes", "_silence_"):
        write_audio(inputs / "clips" / word / "a.wav", demo[16000 : 16000 * 2])
    recipe = _tiny_recipe(inputs, epochs=1)
    recipe.write_text(recipe.read_text().replace(str(inputs / "run"), str(out / "run"))
                      .replace(str(inputs / "cache"), str(out / "cache")))
    shutil.move(recipe, inputs / "tiny.yaml")
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # torch sets it in this process once an earlier test exported a model
    env.pop("XDG_CACHE_HOME", None)
    r = subprocess.run([sys.executable, "-c", AUDITED, str(inputs), str(out)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    writes = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(writes) > 10  # the hook saw the outputs being written
    # Allowed: /dev/null (ctypes.util.find_library runs ldconfig); and torch, when training builds its optimizer,
    # imports torch._dynamo, which probes $TMPDIR (a file made and removed) and makes an empty torchinductor_$USER
    # folder there (TORCHINDUCTOR_CACHE_DIR moves it).
    torch_tmp = {tmp / f"torchinductor_{getpass.getuser()}"}
    outside = [(event, path) for event, path in writes
               if not Path(path).resolve().is_relative_to(out.resolve()) and path != os.devnull
               and not (Path(path).parent == tmp and (event in ("open", "os.remove") or Path(path) in torch_tmp))]
    assert outside == [], outside
    for d in (home, cwd):
        assert list(d.iterdir()) == [], d
    assert set(tmp.iterdir()) <= torch_tmp and all(list(d.iterdir()) == [] for d in tmp.iterdir())
    assert {"model.pt", "model.ts", "eval.json", "audio", "run", "cache"} <= {p.name for p in out.iterdir()}
