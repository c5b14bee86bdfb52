"""Build the bundled street recording that `make demo` transcribes, with its ground truth.

    python pipelines/build_demo.py [--out drsn_asr/assets/street_demo.flac]

Real speech of speakers the default model never trained on (FSDD digits by theo and lucas, CC BY-SA 4.0, and
held-out command sentences, Apache-2.0) laid over a synthesized street (traffic pass-bys, engines, horns,
a siren, road rumble) at 0–15 dB SNR. Ground truth (word, start_s, end_s, snr_db) goes to a .json beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from drsn_asr import noise  # noqa: E402
from drsn_asr.audio import SAMPLE_RATE, read_audio, write_audio  # noqa: E402
from drsn_asr.augment import active_rms  # noqa: E402
from drsn_asr.data import read_fsdd, read_sentences  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def trim(audio: np.ndarray, floor_db: float = 35.0) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames more than `floor_db` below the loudest)."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = np.flatnonzero(level > level.max() - floor_db)
    return audio[active[0] * 160 : (active[-1] + 1) * 160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "drsn_asr" / "assets" / "street_demo.flac"))
    parser.add_argument("--n-words", type=int, default=12)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    digits = read_fsdd(SHARED / "fsdd" / "recordings", ("theo", "lucas"))
    sentences = read_sentences(SHARED / "command-sentences" / "clean", part=(0.9, 1.0))
    sentence_files = sorted({ex.path for ex in sentences})

    items = [("word", digits[i]) for i in rng.choice(len(digits), args.n_words, replace=False)]
    items += [("sentence", p) for p in rng.choice(sentence_files, 2, replace=False)]
    order = rng.permutation(len(items))
    speech, truth, t = [np.zeros(int(1.5 * SAMPLE_RATE), np.float32)], [], 1.5
    for i in order:
        kind, item = items[i]
        audio = trim(read_audio(item.path if kind == "word" else item))
        snr_db = float(rng.choice([15.0, 10.0, 5.0, 0.0]))
        audio = audio / max(active_rms(audio, SAMPLE_RATE), 1e-6) * 0.05 * 10 ** (snr_db / 20)
        speech.append(audio.astype(np.float32))
        if kind == "word":
            truth.append({"label": item.word, "start_s": round(t, 3), "end_s": round(t + len(audio) / SAMPLE_RATE, 3),
                          "snr_db": snr_db, "speaker": item.group})
        else:
            truth.append({"label": "_unknown_", "start_s": round(t, 3), "end_s": round(t + len(audio) / SAMPLE_RATE, 3),
                          "snr_db": snr_db, "speaker": "sentence"})
        gap = float(rng.uniform(1.2, 2.2))
        speech.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
        t += len(audio) / SAMPLE_RATE + gap
    speech_track = np.concatenate(speech)
    duration_s = len(speech_track) / SAMPLE_RATE
    street = noise.street_scene(duration_s, SAMPLE_RATE, rng, kinds=["traffic_passby", "engine", "road_rumble"])
    street = street[: len(speech_track)]
    street = street / max(np.sqrt(np.mean(street**2)), 1e-6) * 0.05  # speech above is scaled relative to this
    horn = noise.car_horn(2.0, SAMPLE_RATE, rng)
    at = int(duration_s * 0.4 * SAMPLE_RATE)
    street[at : at + len(horn)] += horn / max(np.abs(horn).max(), 1e-6) * 0.3
    siren = noise.siren(min(8.0, duration_s / 3), SAMPLE_RATE, rng)
    at = int(duration_s * 0.6 * SAMPLE_RATE)
    street[at : at + len(siren)] += siren / max(np.sqrt(np.mean(siren**2)), 1e-6) * 0.02
    mix = speech_track + street
    mix = mix / max(np.abs(mix).max(), 1e-6) * 0.8
    out = Path(args.out)
    write_audio(out, mix)
    out.with_suffix(".json").write_text(json.dumps({
        "source": "pipelines/build_demo.py",
        "licence": "CC BY-SA 4.0 (FSDD speech by theo and lucas); sentences Apache-2.0 (Picovoice); noise synthesized",
        "duration_s": round(duration_s, 2),
        "words": truth,
    }, indent=1))
    print(f"wrote {out} ({duration_s:.1f} s, {sum(w['label'] != '_unknown_' for w in truth)} keywords)")


if __name__ == "__main__":
    main()
