"""Build the synthetic keyword corpus of the default model (drsn_asr/corpus.py does the work).

    python pipelines/build_corpus.py --config configs/corpus.yaml [--out data/corpus/tts] [--limit-voices N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drsn_asr.corpus import build, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="corpus YAML, e.g. configs/corpus.yaml")
    parser.add_argument("--out", default=None, help="output folder (default: the config's `out`)")
    parser.add_argument("--limit-voices", type=int, default=None,
                        help="use at most N voices per engine (quick trial runs)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    out = Path(args.out or config.out)
    if not out.is_absolute() and args.out is None:
        out = REPO / out
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
