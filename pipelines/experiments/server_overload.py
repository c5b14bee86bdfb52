"""More real-time Wyoming clients than a `drsn-asr serve` can serve: what the server does about it (issue 31).

    python pipelines/experiments/server_overload.py [--clients 256] [--seconds 30] [--max-streams N] [--model default]

Starts the server in a child process (this script with `--serve`: the library's `KeywordServer` with its
defaults, plus a thread that prints its inference thread's backlog every 0.5 s), then `--clients` clients of the
bench's kind (`bench._server_client`: each streams its own `--seconds` of the bench's noisy recording in 100 ms
chunks at real-time pace, reading while it sends). Printed: the server's log and backlog as they come, then how
many clients got their transcript (p50/p99 end of audio → transcript) and what the others were told.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def serve(model: str, max_streams: int | None) -> None:
    from drsn_asr.runtime.server import KeywordServer

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    server = KeywordServer(model, device="cpu", max_streams=max_streams)

    def watch() -> None:
        t0 = time.monotonic()
        while True:
            time.sleep(0.5)
            engine = server.engine
            if engine is not None and server.n_streams:
                print(f"  {time.monotonic() - t0:6.1f} s: {server.n_streams} streams, inference {engine.backlog_s():.2f} s "
                      f"behind; {server.n_refused} refused, {engine.n_shed} ended", file=sys.stderr, flush=True)

    async def main() -> None:
        await server.start("tcp://127.0.0.1:0")
        print(f"PORT {server.address[1]} max_streams {server.max_streams}", file=sys.stderr, flush=True)
        threading.Thread(target=watch, daemon=True).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-streams", type=int, default=None, help="the server's (default: its own default)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.model, args.max_streams)

    from drsn_asr.tools.bench import _server_client, noisy_recording

    command = [sys.executable, __file__, "--serve", "--model", args.model]
    if args.max_streams is not None:
        command += ["--max-streams", str(args.max_streams)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        if not line.startswith("PORT"):
            raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
        port = int(line.split()[1])
        print(f"server on port {port}, {line.split(maxsplit=2)[2].strip()}", flush=True)

        def pump() -> None:
            for line in proc.stderr:
                print(line, end="", flush=True)

        threading.Thread(target=pump, daemon=True).start()
        pcm_all = np.round(np.clip(noisy_recording(120.0), -1, 1) * 32767).astype("<i2")
        n_samples = int(args.seconds * 16000)

        async def run() -> list:
            start = asyncio.get_running_loop().time() + 0.5
            tasks = []
            for i in range(args.clients):  # as the bench's capacity search starts them
                at = (i * 104_729) % max(1, len(pcm_all) - n_samples)
                pcm = pcm_all[at : at + n_samples].tobytes()
                tasks.append(_server_client(port, pcm, 3200, 0.1, start + 0.1 * i / args.clients))
            return await asyncio.gather(*tasks, return_exceptions=True)

        results = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait()
    latencies = [r[0] for r in results if isinstance(r, tuple)]
    told = Counter(str(r) for r in results if not isinstance(r, tuple))
    p50, p99 = (np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2)
    print(f"{args.clients} clients: {len(latencies)} got their transcript (p50 {p50:.2f} s, p99 {p99:.2f} s after "
          f"the end of their audio), {len(results) - len(latencies)} did not")
    for what, n in told.most_common():
        print(f"  {n}: {what}")


if __name__ == "__main__":
    main()
