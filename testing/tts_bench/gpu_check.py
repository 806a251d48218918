"""GPU check: CUDA graphs really captured and replayed; graph vs eager; bf16 vs an fp32 reference.

    python scripts/gpu_check.py --random-weights 0.6b --device cuda --json gpu_check.json
    python scripts/gpu_check.py --random-weights tiny --device cpu --expect-eager   # smoke test

The engine runs with its defaults for the device (CUDA: bf16 and graphs; max_context 2048). Streams
run one at a time, so every frame runs in the same batch bucket in both runs and the runs can be
compared sample for sample:
  1-3. graphs captured (> 0, no capture error), replayed during the graph run, no eager fallback;
  4.   the same streams (same seeds, the engine's counter-based sampler) with graphs turned off:
       audio SNR >= 60 dB at the same dtype;
  5-8. teacher forcing (tts_engine.teacher_forcing) along the codes the graph run produced, on the
       engine's model and on an fp32 eager reference built from the same weights: code-0 and
       predictor logits cosine, codec decode SNR of the same codes;
  9.   the engine's streamed audio vs the reference's decode of its codes.
Prints the GPU, driver, torch and CUDA versions and one PASS / FAIL / SKIP line per check; exits 1
if any check FAILs. On a CPU no graph is captured, so it exits 1 unless --expect-eager (graph
checks SKIP, the rest runs as a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from tts_engine import EngineConfig, SamplingConfig, SchedulerConfig, TTSEngine
from tts_engine.codec_decoder import SAMPLES_PER_FRAME
from tts_engine.model_loading import load_model
from tts_engine.prompt import resolve_voice
from tts_engine.runner import ModelRunner
from tts_engine.teacher_forcing import compare, snr_db, teacher_force
from tts_engine.text_input import IncrementalTokenizer

from .common import TEXTS, log, model_source, set_threads
from .gpu_checks import GraphRun, dtype_checks, environment, exit_code, format_checks, graph_checks

REFERENCE_DTYPE = "float32"
LANGUAGE = "english"
FADE_FRAMES = 1  # the packetizer fades the first frame in; comparisons with a raw decode skip it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint folder (Qwen3-TTS-12Hz CustomVoice)")
    src.add_argument("--random-weights", choices=("tiny", "0.6b", "1.7b"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: the engine's for the device")
    ap.add_argument("--frames", type=int, default=48, help="frames per stream (80 ms each)")
    ap.add_argument("--streams", type=int, default=3, help="streams per run, one after another")
    ap.add_argument("--expect-eager", action="store_true",
                    help="no CUDA graphs expected (CPU smoke test): graph checks SKIP instead of FAIL")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    if args.frames < 2 or not 1 <= args.streams <= len(TEXTS):
        ap.error(f"--frames must be >= 2 and --streams in 1..{len(TEXTS)}")
    return args


def run_streams(engine: TTSEngine, cases: list[tuple[str, str, int]], frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(codes [frames, 16], float audio) per case, one stream at a time (a fixed batch bucket)."""
    out = []
    for text, speaker, seed in cases:
        stream = engine.open_stream(speaker=speaker, language=LANGUAGE, max_frames=frames, seed=seed)
        stream.push_text(text)
        stream.end_text()
        pcm = np.concatenate([p.pcm for p in stream]).astype(np.float64) / 32767.0
        if stream.codes.shape[0] != frames:
            raise RuntimeError(f"a stream ended after {stream.codes.shape[0]} of {frames} frames "
                               f"({stream.stats.finish_reason})")
        out.append((stream.codes, pcm))
    return out


def graph_vs_eager(engine: TTSEngine, cases: list[tuple[str, str, int]],
                   frames: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], GraphRun]:
    """Run the cases with the engine's graphs, then eagerly; return (graph outputs, GraphRun)."""
    run_streams(engine, cases[:1], 4)  # warm-up: prefix cache, allocator
    before = engine.stats()
    start = time.perf_counter()
    graphed = run_streams(engine, cases, frames)
    graph_s = time.perf_counter() - start
    after = engine.stats()
    engine.steps.use_graphs = False  # the identical step functions, eagerly, on the same buffers
    start = time.perf_counter()
    eager = run_streams(engine, cases, frames)
    eager_s = time.perf_counter() - start
    run = GraphRun(attempted=engine.config.use_cuda_graphs, captured=after["cuda_graphs"],
                   capture_error=after["graph_capture_error"],
                   replays=after["graph_replays"] - before["graph_replays"],
                   fallbacks=after["eager_fallbacks"] - before["eager_fallbacks"],
                   snr_db=[snr_db(g[1], e[1]) for g, e in zip(graphed, eager, strict=True)],
                   codes_equal=[bool(np.array_equal(g[0], e[0])) for g, e in zip(graphed, eager, strict=True)],
                   graph_s=graph_s, eager_s=eager_s)
    return graphed, run


def weights_equal(test: ModelRunner, reference: ModelRunner) -> bool:
    """Every tensor of the test model equals the reference's cast to its dtype (same weights, rounded)."""
    for test_module, ref_module in ((test.loaded.model, reference.loaded.model),
                                    (test.loaded.speech_decoder, reference.loaded.speech_decoder)):
        ref_state = ref_module.state_dict()
        for name, tensor in test_module.state_dict().items():
            ref = ref_state.get(name)
            if ref is None or not ref.to(device=tensor.device, dtype=tensor.dtype).equal(tensor):
                log(f"  weights differ at {name}")
                return False
    return True


def _strict_json(value):
    """Infinite SNR (identical audio) as the string "inf": JSON has no infinity."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(None, args.device)
    env = environment(args.device)
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    with model_source(args.model, args.random_weights) as src:
        # the engine's defaults (context, streams, dtype, graphs); only the length is fixed (EOS held
        # back) and pacing is off, so the runs measure the engine rather than a playback clock
        cfg = EngineConfig(**src.engine_kwargs, device=args.device, dtype=args.dtype,
                           sampling=SamplingConfig(min_new_tokens=args.frames + 1),
                           scheduler=SchedulerConfig(max_lead_s=None))
        start = time.perf_counter()
        with TTSEngine(cfg) as engine:
            log(f"[gpu_check] {engine.loaded.name} on {args.device} ({cfg.torch_dtype}), max_context "
                f"{cfg.max_context}: built + captured in {time.perf_counter() - start:.1f} s, {engine.stats()}")
            speakers = engine.speakers
            cases = [(TEXTS[i], speakers[i % len(speakers)], 1234 + i) for i in range(args.streams)]
            graphed, graph_run = graph_vs_eager(engine, cases, args.frames)
        # the engine thread has stopped: its runner is ours now
        log("[gpu_check] teacher forcing along the graph run's codes ...")
        ref_cfg = replace(cfg, dtype=REFERENCE_DTYPE, cuda_graphs=False, max_streams=1)
        reference = ModelRunner(load_model(ref_cfg), ref_cfg)
        agreements, engine_db = [], []
        for (text, speaker, _seed), (codes, pcm) in zip(cases, graphed, strict=True):
            voice = resolve_voice(engine.loaded.talker_config, speaker, LANGUAGE, engine.languages)
            text_ids = IncrementalTokenizer(engine.text_tokenizer).tokenize_all(text)
            ref_run = teacher_force(reference, voice, text_ids, codes)
            agreements.append(asdict(compare(ref_run, teacher_force(engine.runner, voice, text_ids, codes))))
            skip = FADE_FRAMES * SAMPLES_PER_FRAME
            engine_db.append(snr_db(ref_run.audio[skip:], pcm[skip:]))
        test_dtype = str(engine.runner.dtype).removeprefix("torch.")
        checks = graph_checks(graph_run, args.expect_eager) + dtype_checks(
            test_dtype, REFERENCE_DTYPE, weights_equal(engine.runner, reference), agreements, engine_db)
    report = format_checks(checks)
    print(report)
    if args.json_out:
        result = {"environment": env, "model": src.name, "dtype": test_dtype, "max_context": cfg.max_context,
                  "frames": args.frames, "streams": args.streams, "checks": [asdict(c) for c in checks],
                  "teacher_forcing": agreements, "engine_vs_reference_db": engine_db}
        with open(args.json_out, "w") as f:
            json.dump(_strict_json(result), f, indent=2)
    return exit_code(checks)
