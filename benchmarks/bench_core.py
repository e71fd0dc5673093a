"""Core client benchmarks: per-call overhead and batch throughput (benchmarks 1 and 3 of run.py).

    python benchmarks/bench_core.py [--quick]

Kept for its old command line; the measurements now live in ``bench_overhead.py`` (shark_nb vs raw
httpx vs the OpenAI SDK, at 0 s and 0.2 s of server time) and ``bench_batch.py`` (generate_many at
concurrency 1/4/8/16 vs a sequential loop, and under a rate limit). ``python benchmarks/run.py``
runs every benchmark and writes RESULTS.md; this script only prints these two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_batch
import bench_overhead
from run import plain_table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = bench_overhead.run(args.quick) + bench_batch.run(args.quick)
    print(plain_table(rows))
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
