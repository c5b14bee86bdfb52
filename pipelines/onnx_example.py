"""Recognize commands with an exported ONNX model and nothing of drsn-asr: numpy, soundfile, onnxruntime.

    drsn-asr export --format onnx default model.onnx
    python pipelines/onnx_example.py model.onnx drsn_asr/assets/street_demo.flac

The model scores one window (1 s) of raw audio; this script slides it along the file every HOP_S seconds,
averages the last few windows' probabilities (as the library's Recognizer does, more simply), and prints a
command each time one leads above the threshold. Everything the script needs to know — labels, sample rate,
window length — is read from the model's metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # else importing onnxruntime writes a device id under ~/.cache
import onnxruntime  # noqa: E402
import soundfile  # noqa: E402

HOP_S = 0.05  # one classification every 50 ms
SMOOTH_WINDOWS = 3  # average the probabilities of the last 3 windows (150 ms)
FILLER = ("_unknown_", "_silence_")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an .onnx file written by `drsn-asr export --format onnx`")
    parser.add_argument("audio", help="a mono or multichannel wav/flac/ogg at the model's sample rate")
    parser.add_argument("--threshold", type=float, default=0.6, help="smoothed probability needed (default 0.6)")
    args = parser.parse_args()

    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    labels = json.loads(meta["labels"])
    rate, window = int(meta["sample_rate"]), int(meta["window_samples"])

    audio, file_rate = soundfile.read(args.audio, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)  # down-mix
    if file_rate != rate:
        print(f"{args.audio}: {file_rate} Hz; the model wants {rate} Hz — convert first, e.g. "
              f"ffmpeg -i IN -ar {rate} -ac 1 OUT.wav", file=sys.stderr)
        return 1

    # windows ending every hop, the first ones padded with silence on the left
    hop = round(HOP_S * rate)
    padded = np.concatenate([np.zeros(window - hop, np.float32), audio])
    starts = range(0, len(padded) - window + 1, hop)
    windows = np.stack([padded[s : s + window] for s in starts])
    probs = np.concatenate([session.run(["probs"], {"audio": windows[i : i + 64]})[0]
                            for i in range(0, len(windows), 64)])

    keyword = np.array([label not in FILLER for label in labels])
    armed = np.ones(len(labels), bool)  # a command fires again only after its score has dropped
    for i in range(len(probs)):
        smoothed = probs[max(0, i - SMOOTH_WINDOWS + 1) : i + 1].mean(axis=0)
        armed |= smoothed < args.threshold / 2
        best = int(np.argmax(smoothed))
        if keyword[best] and smoothed[best] >= args.threshold and armed[best]:
            armed[best] = False
            end_s = (i * hop + hop) / rate
            print(f"{end_s:7.2f} s  {labels[best]}  {smoothed[best]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
