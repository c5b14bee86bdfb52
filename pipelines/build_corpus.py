"""Build the synthetic keyword corpus of the default model (drsn_asr/training/corpus.py does the work).

    python pipelines/build_corpus.py --config configs/corpus.yaml [--out data/corpus/tts] [--limit-voices N]
    python pipelines/build_corpus.py --config configs/corpus.yaml --fingerprints   # digests only, no build

After a build it prints the corpus's digests (`drsn_asr.training.corpus.fingerprints`): the whole folder's, the
manifest's and each engine's, so that two builds that differ can be told apart by engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drsn_asr.training.corpus import build, fingerprints, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="corpus YAML, e.g. configs/corpus.yaml")
    parser.add_argument("--out", default=None, help="output folder (default: the config's `out`)")
    parser.add_argument("--limit-voices", type=int, default=None,
                        help="use at most N voices per engine (quick trial runs)")
    parser.add_argument("--fingerprints", action="store_true",
                        help="print the digests of the corpus already built (JSON) and build nothing")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    out = Path(args.out or config.out)
    if not out.is_absolute() and args.out is None:
        out = REPO / out
    if args.fingerprints:
        if not (out / "manifest.csv").is_file():
            print(f"no corpus in {out} (no manifest.csv): build it first", file=sys.stderr)
            return 1
        print(json.dumps(fingerprints(out), indent=1))
        return 0
    start = time.monotonic()
    rows, stats = build(config, out, args.limit_voices)
    elapsed = time.monotonic() - start

    by_engine = Counter(r["engine"] for r in rows)
    by_word = Counter(r["word"] for r in rows)
    keywords = set(config.keywords)
    print(f"\n{len(rows)} clips in {out} ({elapsed / 60:.1f} min)")
    print("per engine: " + ", ".join(f"{e} {n}" for e, n in sorted(by_engine.items())))
    print("keywords:   " + ", ".join(f"{w} {by_word[w]}" for w in config.keywords))
    unknown = [by_word[w] for w in config.unknown_words]
    print(f"unknown:    {sum(unknown)} clips over {len(unknown)} words "
          f"(min {min(unknown, default=0)}, max {max(unknown, default=0)})")
    print("counts:     " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    short = [w for w in keywords if by_word[w] < 400]
    if short:
        print(f"note: keywords with < 400 clips: {sorted(short)}")
    print("digests:    " + json.dumps(fingerprints(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
