#!/usr/bin/env python
"""Regression suite for the streaming TTS engine: tiny checkpoint by default (CI), or --model DIR.

    ./.venv/bin/python scripts/tts_regression.py [--fast] [--json OUT]
    ./.venv/bin/python scripts/tts_regression.py --write-golden      # after an intended numerics change
    python scripts/tts_regression.py --model DIR --device cuda

Checks, printed PASS/FAIL/SKIP with their numbers (exit status 1 on any FAIL):
1. determinism: a fixed seed with do_sample=True gives bit-identical audio (10 runs; 3 with --fast)
2. golden SNR >= 60 dB against tests/golden/tiny_golden.npz (only for the tiny seed-0 checkpoint)
3. streamed (words pushed one by one) vs offline synthesize(): lengths within one frame (greedy)
4. no repetition loops: no codebook-0 n-gram of >= 8 frames repeated back to back more than 3 times
5. audio sanity: non-empty, finite, RMS > 1e-3, under 1% of samples clipped
SNR of identical audio is infinite and is written to the JSON report as Infinity.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from testing.tts_bench import checks, golden  # noqa: E402
from testing.tts_bench.common import log, model_source, set_threads  # noqa: E402
from tts_engine import EngineConfig, SchedulerConfig, TTSEngine  # noqa: E402

MIN_SNR_DB = 60.0
CHECKS = ("determinism", "golden SNR", "stream vs offline length", "no repetition loops", "audio sanity")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder (default: build the tiny test checkpoint, seed 0)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--threads", type=int, help="torch threads (default 1 on CPU)")
    ap.add_argument("--fast", action="store_true", help="3 determinism runs instead of 10")
    ap.add_argument("--frames", type=int, default=24, help="frames per determinism run")
    ap.add_argument("--golden", type=Path, default=golden.GOLDEN_PATH)
    ap.add_argument("--write-golden", action="store_true",
                    help="(re)write the golden from the tiny checkpoint built here, then check")
    ap.add_argument("--json", dest="json_out", help="write the report here")
    args = ap.parse_args(argv)
    if args.write_golden and args.model:
        ap.error("--write-golden writes the golden of the tiny seed-0 checkpoint: leave out --model")
    return args


def _engine(args: argparse.Namespace, model_kwargs: dict, do_sample: bool) -> TTSEngine:
    # no pacing to playback: streams run as fast as the device allows
    return TTSEngine(EngineConfig(**model_kwargs, device=args.device, dtype=args.dtype, do_sample=do_sample,
                                  scheduler=SchedulerConfig(max_lead_s=None), cpu_threads=args.threads))


def _report(check: checks.Check) -> checks.Check:
    print(f"[{check.number}/{len(CHECKS)}] {check.name}: {check.status} - {check.summary}", flush=True)
    return check


def run(args: argparse.Namespace) -> dict:
    threads = set_threads(args.threads, args.device)
    out = checks.Outputs()
    results: list[checks.Check] = []
    with model_source(args.model, None if args.model else "tiny") as src:
        log(f"model: {src.name} on {args.device}")
        with _engine(args, src.engine_kwargs, do_sample=True) as engine:
            results.append(_report(checks.determinism(1, engine, 3 if args.fast else 10, args.frames, out)))
        with _engine(args, src.engine_kwargs, do_sample=False) as engine:
            # hashing the weights only makes sense for a tiny test checkpoint (and is cheap there)
            fingerprint = golden.weight_fingerprint(engine.loaded) if engine.is_test_voice else None
            if args.write_golden:
                outputs = [golden.render(engine, case, golden.GOLDEN_FRAMES) for case in golden.CASES]
                golden.write(args.golden, fingerprint, outputs)
                log(f"golden written to {args.golden}")
            results.append(_report(checks.golden_snr(2, engine, args.golden, fingerprint, MIN_SNR_DB, out)))
            results.append(_report(checks.stream_vs_offline(3, engine, out)))
    results.append(_report(checks.repetition_loops(4, out)))
    results.append(_report(checks.audio_sanity(5, out)))
    golden_check = results[1]
    return {"model": src.name, "device": args.device, "threads": threads, "fast": args.fast,
            "passed": all(c.status != "FAIL" for c in results),
            "golden_min_snr_db": golden_check.details.get("min_snr_db"),
            "checks": [asdict(c) for c in results]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    report = run(args)
    report["elapsed_s"] = time.perf_counter() - start
    failed = [c["name"] for c in report["checks"] if c["status"] == "FAIL"]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'} ({report['elapsed_s']:.1f} s)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
        log(f"report written to {args.json_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
