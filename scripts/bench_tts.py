#!/usr/bin/env python
"""Benchmark the streaming TTS engine, with the qwen-tts package's own path as baseline.

    ./.venv/bin/python scripts/bench_tts.py --random-weights tiny --frames 32 --runs 5 --streams 1,4
    ./.venv/bin/python scripts/bench_tts.py --random-weights 0.6b --frames 6 --runs 2   # slow on a CPU
    ./.venv/bin/python scripts/bench_tts.py --random-weights 0.6b --precision fp32,bf16,int8 --streams 1,2
    python scripts/bench_tts.py --model DIR --device cuda --streams 1,4,16 --json out.json

Reports model load time, time to the first 20 ms packet (p50/p95), the per-frame split into
talker / predictor / codec decoder (and the prefill), RTF, underrun rate, peak GPU memory (CUDA),
and the qwen-tts package's own path timed like for like: generate with the prefill in both sides
and out of both, the codec against the package's default chunked decode, whole-utterance decode
and windowed re-decoding, and text to all audio; each comparison says what each side includes and
gives the ratio both ways. The JSON records the machine (CPU model and flags, torch, threads, load
average). Every utterance has exactly --frames frames: EOS is held off until then (random weights
would stop anywhere). --precision runs the whole benchmark once per precision (fp32: the exact
float path; bf16; int8: int8 linears in the talker and predictor; auto: what the engine picks), one
after the other in one process, and ends with a side-by-side table; the package baseline runs in
the fp32 variant only (the package's own float arithmetic).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

from testing.tts_bench.baseline import measure_baseline  # noqa: E402
from testing.tts_bench.common import (  # noqa: E402
    TEXTS,
    is_cuda,
    load_average,
    log,
    machine_info,
    model_source,
    set_threads,
)
from testing.tts_bench.compare import comparisons  # noqa: E402
from testing.tts_bench.frame_split import measure_frame_split  # noqa: E402
from testing.tts_bench.report import PRECISIONS, format_precision_summary, format_report  # noqa: E402
from testing.tts_bench.streams import measure_streams, run_concurrent  # noqa: E402
from tts_engine import EngineConfig, FrameCapConfig, SamplingConfig, SchedulerConfig, TTSEngine  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint folder (Qwen3-TTS-12Hz CustomVoice)")
    src.add_argument("--random-weights", choices=("tiny", "0.6b", "1.7b"),
                     help="tiny: build the tiny test checkpoint in a temp folder; 0.6b/1.7b: full size, random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: fp32 on CPU, bf16 on CUDA")
    ap.add_argument("--quantize", choices=("auto", "none", "int8"), default="auto",
                    help="int8 linears in the talker and predictor (auto: on a CPU with VNNI/AMX, in fp32)")
    ap.add_argument("--codec-dtype", choices=("float32", "bfloat16", "float16"),
                    help="speech decoder dtype (default: bf16 for a full-size decoder on a CPU with bf16, else --dtype)")
    ap.add_argument("--precision", help=f"comma list of {', '.join(PRECISIONS)}: one full run each, then a table "
                    "(overrides --dtype/--quantize)")
    ap.add_argument("--frames", type=int, default=32, help="frames per utterance (80 ms each)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--streams", default="1", help="comma list of concurrent stream counts, e.g. 1,4,16")
    ap.add_argument("--threads", type=int, help="torch threads (default 1 on CPU)")
    ap.add_argument("--speaker", default="ryan")
    ap.add_argument("--language", default="english")
    ap.add_argument("--no-baseline", action="store_true", help="skip the qwen-tts package baseline")
    ap.add_argument("--json", dest="json_out", help="write the results here")
    args = ap.parse_args(argv)
    try:
        args.stream_counts = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--streams must be a comma list of integers, got {args.streams!r}")
    if not args.stream_counts or min(args.stream_counts) < 1:
        ap.error("--streams needs counts >= 1")
    if args.frames < 1 or args.runs < 1:
        ap.error("--frames and --runs must be >= 1")
    args.precisions = [x.strip() for x in (args.precision or "").split(",") if x.strip()]
    if any(p not in PRECISIONS for p in args.precisions):
        ap.error(f"--precision takes a comma list of {', '.join(PRECISIONS)}, got {args.precision!r}")
    return args


def engine_config(args: argparse.Namespace, model_kwargs: dict) -> EngineConfig:
    return EngineConfig(
        **model_kwargs, device=args.device, dtype=args.dtype, quantize=args.quantize,
        codec_dtype=args.codec_dtype, seed=0, max_streams=max(args.stream_counts), cpu_threads=args.threads,
        # a fixed length: EOS is not allowed before frames + 1 tokens, and the text-length cap sits above it
        sampling=SamplingConfig(min_new_tokens=args.frames + 1),
        frame_cap=FrameCapConfig(base_frames=max(FrameCapConfig.base_frames, args.frames)),
        # no pacing to playback: the benchmark measures how fast the engine can go
        scheduler=SchedulerConfig(max_lead_s=None))


def wait_for_background_work(engine, timeout_s: float = 600.0) -> float:
    """Start-up background work (prefix-cache warming) shares the device: let it finish first."""
    start = time.monotonic()
    while getattr(engine.executor, "background", None) and time.monotonic() - start < timeout_s:
        time.sleep(0.05)
    return time.monotonic() - start


def run(args: argparse.Namespace) -> dict:
    threads = set_threads(args.threads, args.device)
    machine = machine_info()
    transformers.logging.set_verbosity_error()  # HF generate's per-call notices would drown the progress
    with model_source(args.model, args.random_weights) as src:
        log(f"loading {src.name} on {args.device} ...")
        start = time.perf_counter()
        engine = TTSEngine(engine_config(args, src.engine_kwargs))
        load_s = time.perf_counter() - start
        log(f"loaded in {load_s:.1f} s")
        with engine:
            waited = wait_for_background_work(engine)
            if waited > 0.1:
                log(f"waited {waited:.1f} s for the engine's start-up background work")
            log("warm-up stream ...")
            run_concurrent(engine, 1, min(args.frames, 4), args.speaker, args.language, seed=99)
            cuda = is_cuda(args.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            log("streams ...")
            streams = measure_streams(engine, args.stream_counts, args.runs, args.frames, args.speaker, args.language)
            log("per-frame split ...")
            split = measure_frame_split(engine, args.frames, args.speaker, args.language, TEXTS[0],
                                        prefills=args.runs)
            peak = torch.cuda.max_memory_allocated() if cuda else None
            baseline = None
            if not args.no_baseline and engine.loaded.int8_linears:
                # the package would run on this engine's model, whose linears are now int8
                log("qwen-tts package baseline skipped: int8 linears (run it with --quantize none or --precision fp32)")
            elif not args.no_baseline:
                log("qwen-tts package baseline ...")
                baseline = measure_baseline(engine, TEXTS[0], args.speaker, args.language, args.frames, args.runs)
            dtype = str(engine.runner.dtype).removeprefix("torch.")
            int8 = engine.loaded.int8_linears
            codec = str(engine.runner.decoder.dtype).removeprefix("torch.")
    machine["load_avg_end"] = load_average()
    compared = comparisons(split, baseline or {}, streams, args.frames)
    return {
        "config": {"model": args.model, "random_weights": args.random_weights, "device": args.device, "dtype": dtype,
                   "int8_linears": int8, "codec_dtype": codec, "precision": getattr(args, "precision_name", None), "frames": args.frames, "runs": args.runs, "streams": args.stream_counts, "threads": threads,
                   "speaker": args.speaker, "language": args.language, "torch": torch.__version__,
                   "cuda_device": torch.cuda.get_device_name() if is_cuda(args.device) else None,
                   "host": platform.node(), "cpu_count": os.cpu_count(), "machine": machine},
        "model": {"name": src.name, "load_s": load_s, "build_s": src.build_s if src.built_tiny else None},
        "streams": streams,
        "frame_split_ms": split,
        "peak_gpu_mem_bytes": peak,
        "baseline": baseline,
        # what each side includes, both ratio directions; `ratios` repeats engine/package by key
        "comparisons": compared,
        "ratios": {c["key"]: c["engine_over_package"] for c in compared},
    }


def _json_safe(value):
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def run_precisions(args: argparse.Namespace) -> dict:
    """The whole benchmark once per --precision, in one process; the package baseline with fp32 only."""
    variants = []
    for name in args.precisions:
        log(f"=== precision {name} (load average {load_average()}) ===")
        dtype, quantize, codec = PRECISIONS[name]
        one = argparse.Namespace(**{**vars(args), "dtype": dtype, "quantize": quantize, "codec_dtype": codec,
                                    "precision_name": name,
                                    "no_baseline": args.no_baseline or name != "fp32"})
        result = run(one)
        print(format_report(result), flush=True)
        variants.append(result)
    return {"precisions": args.precisions, "variants": variants}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.precisions:
        results = run_precisions(args)
        print(format_precision_summary(results["variants"]))
    else:
        results = run(args)
        print(format_report(results))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(_json_safe(results), f, indent=2)
        log(f"results written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
