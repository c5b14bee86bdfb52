"""TTS engines and the corpus builder, on whatever engines are installed here."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from drsn_asr.training import corpus as build_corpus
from drsn_asr.training import tts
from drsn_asr.runtime.audio import write_audio



def _first_voice(engine: str) -> tts.Voice:
    if not tts.engine_available(engine):
        pytest.skip(f"{engine} is not installed")
    voices, _ = tts.list_voices([engine])
    assert voices, f"{engine} is installed but list_voices found no voice"
    return voices[0]


@pytest.mark.parametrize("engine", tts.ENGINES)
def test_list_voices_finds_installed_engines(engine):
    voice = _first_voice(engine)
    assert voice.engine == engine and voice.licence and voice.name


def test_list_voices_rejects_unknown_engine():
    with pytest.raises(ValueError, match="espeak"):
        tts.list_voices(["nonesuch"])


@pytest.mark.parametrize("engine", tts.ENGINES)
def test_synthesize_returns_normalised_16k_float(engine):
    audio = tts.synthesize(_first_voice(engine), "seven", sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.2 < len(audio) / 16000 < 3.0
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.01


@pytest.mark.parametrize("engine", tts.ENGINES)
def test_every_engine_renders_a_batch_the_same_in_another_process(engine, tmp_path):
    voice = _first_voice(engine)  # Piper's noise is drawn inside its graph, where only a seeded node repeats
    here = tts.synthesize_batch(voice, ["seven", "I said go"], rate=1.1)
    script = ("import sys, numpy as np; from drsn_asr.training import tts; "
              f"v = [v for v in tts.list_voices([{engine!r}])[0] if v.name == {voice.name!r}][0]; "
              "a = tts.synthesize_batch(v, ['seven', 'I said go'], rate=1.1); "
              "np.save(sys.argv[1], np.concatenate(a)); print(*map(len, a))")
    out = tmp_path / "there.npy"
    r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(len(a)) for a in here]
    assert np.array_equal(np.load(out), np.concatenate(here))
    again = tts.synthesize_batch(voice, ["seven", "I said go"], rate=1.1)
    assert all(np.array_equal(a, b) for a, b in zip(here, again))


@pytest.mark.parametrize("engine", tts.ENGINES)
def test_rate_changes_duration(engine):
    voice = _first_voice(engine)
    slow, fast = (len(tts.trim(tts.synthesize(voice, "seven eight nine", rate=r))) for r in (0.7, 1.4))
    assert slow > 1.3 * fast


@pytest.mark.parametrize("engine", ["espeak", "flite"])
def test_pitch_keeps_duration(engine):
    voice = _first_voice(engine)
    low, high = (len(tts.trim(tts.synthesize(voice, "seven eight nine", pitch=p))) for p in (0.85, 1.2))
    assert 0.75 < low / high < 1.33


def test_words_cut_from_carrier_are_shorter_than_phrase():
    voice = _first_voice("espeak")
    clips = tts.synthesize_words(voice, ["seven", "go"], carrier="I said")
    phrase = tts.trim(tts.synthesize(voice, "I said seven"))
    assert [c.method for c in clips] == ["carrier", "carrier"]
    assert 0.15 * 16000 < len(clips[0].audio) < 0.8 * len(phrase)


@pytest.mark.parametrize("engine", ["espeak", "pico"])
def test_cut_keeps_initial_s_of_stop(engine):
    # "said stop": the /t/ closure is the deepest dip, so a cut at the quietest point gives "top".
    clip = tts.synthesize_words(_first_voice(engine), ["stop"], carrier="I said")[0]
    head = clip.audio[: int(0.12 * 16000)]
    spectrum = np.abs(np.fft.rfft(head)) ** 2
    freqs = np.fft.rfftfreq(len(head), 1 / 16000)
    assert clip.method == "carrier"
    assert (spectrum * freqs).sum() / spectrum.sum() > 2500  # /s/ is hiss: centroid far above a vowel's


def _tiny_config(tmp_path: Path, **engines) -> Path:
    lines = ['keywords: ["yes", "seven"]', "unknown_words: [heaven]", "unknown_keep: 0.0",
             "workers: 2", "engines:"]
    lines += [f"  {e}: {{max_voices: {n}, variants_per_voice: 1}}" for e, n in engines.items()]
    path = tmp_path / "corpus.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_build_corpus_writes_manifest_and_resumes(tmp_path):
    if not tts.engine_available("espeak"):
        pytest.skip("espeak-ng is not installed")
    config = build_corpus.load_config(_tiny_config(tmp_path, espeak=2))
    out = tmp_path / "tts"
    rows, stats = build_corpus.build(config, out, progress=False)
    assert stats["written"] == 4 and len(rows) == 4

    with open(out / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert list(manifest[0]) == build_corpus.MANIFEST_COLUMNS
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert sorted(r["path"] for r in manifest) == on_disk
    for row in manifest:
        info = sf.info(out / row["path"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row["path"].startswith(row["word"] + "/") and row["engine"] == "espeak"
        assert abs(float(row["duration_s"]) - info.frames / 16000) < 1e-3
        assert float(row["duration_s"]) <= config.max_duration_s

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    text = (out / "manifest.csv").read_text()
    _, again = build_corpus.build(config, out, progress=False)
    assert again["written"] == 0 and again["existing"] == 4
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == mtimes
    assert (out / "manifest.csv").read_text() == text


def test_config_rejects_unknown_keys(tmp_path):
    path = _tiny_config(tmp_path, espeak=1)
    path.write_text(path.read_text() + "carier: oops\n")
    with pytest.raises(ValueError, match="carier"):
        build_corpus.load_config(path)
    path = _tiny_config(tmp_path, espeak=1)
    path.write_text(path.read_text().replace("variants_per_voice", "variants"))
    with pytest.raises(ValueError, match="engines.espeak.variants"):
        build_corpus.load_config(path)


def test_config_rejects_unquoted_yes(tmp_path):
    path = _tiny_config(tmp_path, espeak=1)
    path.write_text(path.read_text().replace('["yes", "seven"]', "[yes, seven]"))
    with pytest.raises(ValueError, match="keywords"):
        build_corpus.load_config(path)


def test_corpus_fingerprints_tell_which_engine_changed(tmp_path):
    """Per-engine digests: a changed clip moves its engine's digest and the corpus's, no other engine's."""
    from drsn_asr.training.data import folder_fingerprint

    out = tmp_path / "tts"
    for word in ("yes", "no"):
        (out / word).mkdir(parents=True)
        for engine, f0 in (("espeak", 200.0), ("piper", 300.0)):
            write_audio(out / word / f"{engine}__v__v0.wav", 0.1 * np.sin(2 * np.pi * f0 * np.arange(1600) / 16000))
    (out / "manifest.csv").write_text("path,word\n")
    before = build_corpus.fingerprints(out)
    assert set(before) == {"corpus", "manifest.csv", "espeak", "piper"}
    assert before["corpus"] == folder_fingerprint(out)  # what seed_trial.py records as corpus_sha256
    write_audio(out / "no" / "piper__v__v0.wav", np.zeros(1600, np.float32))
    after = build_corpus.fingerprints(out)
    assert after["piper"] != before["piper"] and after["corpus"] != before["corpus"]
    assert after["espeak"] == before["espeak"] and after["manifest.csv"] == before["manifest.csv"]
