"""Speed and scale benchmarks, as a script: the same as `drsn-asr bench` (the code is drsn_asr/tools/bench.py, so that
an installed package can run it without this repository).

    python pipelines/bench.py [--json OUT] [--device cpu|cuda] [--quick] [--model NAME_OR_PATH]

Writes the table of docs/performance.md to stdout (and every figure with its runs to OUT as JSON).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drsn_asr.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
