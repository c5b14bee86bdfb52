"""Build street recordings with ground truth: the bundled demo, and longer ones for streaming evaluation.

    python pipelines/build_demo.py [--out drsn_asr/assets/street_demo.flac] [--n-words 12] [--seed 3]

Real speech of speakers the default model never trained on (FSDD digits by theo, CC BY-SA 4.0, and
held-out command sentences, Apache-2.0), optionally keywords spoken by held-out TTS voices, laid over a
synthesized street (traffic pass-bys, engines, road rumble, a horn, a siren) at 0–15 dB SNR on the active
speech. Ground truth (label, start_s, end_s, snr_db) goes to a .json beside the audio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr.training import noise  # noqa: E402
from drsn_asr.runtime.audio import SAMPLE_RATE, read_audio, write_audio  # noqa: E402
from drsn_asr.training.augment import active_rms  # noqa: E402
from drsn_asr.training.data import Example, read_fsdd, read_sentences  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
STREET_LEVEL_RMS = 0.05
SNRS_DB = (15.0, 10.0, 5.0, 0.0)


def trim(audio: np.ndarray, floor_db: float = 35.0) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames more than `floor_db` below the loudest)."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = np.flatnonzero(level > level.max() - floor_db)
    return audio[active[0] * 160 : (active[-1] + 1) * 160]


def make_recording(keywords: list[Example], sentence_paths: list[str], rng: np.random.Generator,
                   gap_range_s: tuple[float, float] = (1.2, 2.2), others: list[Example] = (),
                   sirens: bool = True, snrs_db: tuple[float, ...] = SNRS_DB) -> tuple[np.ndarray, list[dict]]:
    """Speech items in random order with random gaps over a synthesized street; returns (audio, truth).

    `keywords` are labelled with their word; `sentence_paths` and `others` (single non-keyword words) are
    `_unknown_`. `sirens=False` leaves out the sirens, a noise kind held out of training (for a validation
    recording, which must not hold the test's noise). Each item is spoken at an SNR drawn from `snrs_db`."""
    items = ([("word", ex) for ex in keywords] + [("sentence", p) for p in sentence_paths]
             + [("other", ex) for ex in others])
    speech, truth, t = [np.zeros(int(1.5 * SAMPLE_RATE), np.float32)], [], 1.5
    for i in rng.permutation(len(items)):
        kind, item = items[i]
        audio = trim(read_audio(item if kind == "sentence" else item.path))
        snr_db = float(rng.choice(snrs_db))
        audio = audio / max(active_rms(audio, SAMPLE_RATE), 1e-6) * STREET_LEVEL_RMS * 10 ** (snr_db / 20)
        speech.append(audio.astype(np.float32))
        end = t + len(audio) / SAMPLE_RATE
        truth.append({"label": item.word if kind == "word" else "_unknown_", "start_s": round(t, 3),
                      "end_s": round(end, 3), "snr_db": snr_db,
                      "speaker": "sentence" if kind == "sentence" else item.group})
        gap = float(rng.uniform(*gap_range_s))
        speech.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
        t = end + gap
    track = np.concatenate(speech)
    duration_s = len(track) / SAMPLE_RATE
    street = np.concatenate([
        noise.street_scene(30.0, SAMPLE_RATE, rng, kinds=["traffic_passby", "engine", "road_rumble"])
        for _ in range(int(np.ceil(duration_s / 30.0)))
    ])[: len(track)]
    street = street / max(np.sqrt(np.mean(street**2)), 1e-6) * STREET_LEVEL_RMS  # speech is scaled against this
    for _ in range(max(1, int(duration_s // 40))):  # a horn and a siren every ~40 s
        horn = noise.car_horn(2.0, SAMPLE_RATE, rng)
        at = int(rng.uniform(0, duration_s - 2.0) * SAMPLE_RATE)
        street[at : at + len(horn)] += horn / max(np.abs(horn).max(), 1e-6) * 0.3
        if not sirens:
            continue
        siren = noise.siren(min(8.0, duration_s / 3), SAMPLE_RATE, rng)
        at = int(rng.uniform(0, duration_s - len(siren) / SAMPLE_RATE) * SAMPLE_RATE)
        street[at : at + len(siren)] += siren / max(np.sqrt(np.mean(siren**2)), 1e-6) * 0.02
    mix = track + street
    return (mix / max(np.abs(mix).max(), 1e-6) * 0.8).astype(np.float32), truth


def held_out_speech(rng: np.random.Generator, n_words: int, n_sentences: int) -> tuple[list[Example], list[str]]:
    """Digits of the held-out FSDD speaker (theo) and held-out sentence recordings."""
    digits = read_fsdd(SHARED / "fsdd" / "recordings", ("theo",))
    sentence_files = sorted({ex.path for ex in read_sentences(SHARED / "command-sentences" / "clean", part=(0.9, 1.0))})
    words = [digits[i] for i in rng.choice(len(digits), n_words, replace=False)]
    return words, list(rng.choice(sentence_files, n_sentences, replace=False))


def validation_speech(rng: np.random.Generator, n_words: int, n_others: int, n_sentences: int,
                      recipe: Path = REPO / "configs" / "default.yaml",
                      real_share: float = 0.5) -> tuple[list[Example], list[Example], list[str]]:
    """The recipe's validation split as a stream's speech: keywords and other words of the validation TTS
    voices, and validation sentence recordings. Nothing here is trained on or in a test set, so detector
    settings may be chosen on it. When the recipe validates on real speakers (data.fsdd_validation_speakers,
    data.real_commands_validation_part), `real_share` of the keywords are theirs (all of them when no TTS voice
    validates): TTS keywords alone make a threshold that is strict for real voices."""
    from drsn_asr.training.train import collect_examples, load_train_config

    data = load_train_config(recipe).data
    validation = collect_examples(data, REPO)["validation"]
    spoken = [ex for ex in validation if ex.source != "sentences" and ex.word != "_silence_"]  # (noise clips)
    keywords = [ex for ex in spoken if ex.word in data.vocabulary]
    real = [ex for ex in keywords if ex.source != "tts"]
    synthetic = [ex for ex in keywords if ex.source == "tts"]
    others = [ex for ex in spoken if ex.word not in data.vocabulary]
    sentences = sorted({ex.path for ex in validation if ex.source == "sentences"})
    n_real = (round(n_words * real_share) if synthetic else n_words) if real else 0  # real only: no TTS validates
    if len(real) < n_real or len(synthetic) < n_words - n_real or len(others) < n_others or len(sentences) < n_sentences:
        raise ValueError(f"the validation split of {recipe} has {len(real)} real and {len(synthetic)} TTS keyword "
                         f"clips, {len(others)} other words and {len(sentences)} sentences; asked for {n_real} real and "
                         f"{n_words - n_real} TTS keywords, {n_others} other words, {n_sentences} sentences")
    pick = lambda xs, n: [xs[i] for i in rng.choice(len(xs), n, replace=False)]  # noqa: E731
    words = pick(synthetic, n_words - n_real)
    if n_real:  # (without real speakers the draws stay those of earlier recordings)
        words = pick(real, n_real) + words
        words = [words[i] for i in rng.permutation(n_words)]
    return words, pick(others, n_others), list(rng.choice(sentences, n_sentences, replace=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "drsn_asr" / "assets" / "street_demo.flac"))
    parser.add_argument("--n-words", type=int, default=12)
    parser.add_argument("--n-sentences", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    words, sentences = held_out_speech(rng, args.n_words, args.n_sentences)
    audio, truth = make_recording(words, sentences, rng)
    out = Path(args.out)
    write_audio(out, audio)
    out.with_suffix(".json").write_text(json.dumps({
        "source": f"pipelines/build_demo.py --n-words {args.n_words} --n-sentences {args.n_sentences} --seed {args.seed}",
        "licence": "CC BY-SA 4.0 (FSDD speech by theo); sentences Apache-2.0 (Picovoice); noise synthesized",
        "duration_s": round(len(audio) / SAMPLE_RATE, 2),
        "words": truth,
    }, indent=1))
    print(f"wrote {out} ({len(audio) / SAMPLE_RATE:.1f} s, {len(words)} keywords)")


if __name__ == "__main__":
    main()
