#!/usr/bin/env python
"""Time one frame's batch-1 linears on this CPU in each weight format, against its read bandwidth.

    .venv/bin/python scripts/bench_cpu_linears.py --threads 1,2 --json docs/bench/cpu_linears.json

What it shows and why: testing/tts_bench/linears.py. Random weights, the full-size shapes; a few
seconds per format and thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testing.tts_bench.common import machine_info  # noqa: E402
from testing.tts_bench.linears import FORMATS, format_table, measure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("0.6b", "1.7b"), default="0.6b")
    ap.add_argument("--threads", default="1", help="comma list of torch thread counts (default 1)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    try:
        threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--threads takes a comma list of integers, got {args.threads!r}")
    formats = [x.strip() for x in args.formats.split(",") if x.strip()]
    if not threads or min(threads) < 1:
        ap.error("--threads needs counts >= 1")
    if not formats or any(f not in FORMATS for f in formats):
        ap.error(f"--formats takes a comma list of {', '.join(FORMATS)}, got {args.formats!r}")
    machine = machine_info()
    result = measure(args.size, threads, formats, args.reps)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, **result}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
