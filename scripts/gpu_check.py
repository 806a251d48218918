#!/usr/bin/env python3
"""GPU check: CUDA graphs really captured and replayed; graph vs eager; bf16 vs an fp32 reference.

    python scripts/gpu_check.py --random-weights 0.6b --device cuda --json gpu_check.json
    python scripts/gpu_check.py --random-weights tiny --device cpu --expect-eager   # smoke test

The checks, their options and their thresholds: testing/tts_bench/gpu_check.py (`--help`). Its
tests drive it in-process, so the whole command lives there; this file is its command line.
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from testing.tts_bench.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
