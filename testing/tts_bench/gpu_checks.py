"""The verdicts of scripts/gpu_check.py: thresholds, and one named Check per measured quantity.

A check PASSes only on a number it measured. What a run cannot measure (graph checks where no graph
is in use, the dtype gap when the test dtype IS the reference dtype) is SKIP, with the reason; what
it measured out of bounds, or a capture that failed, is FAIL.
"""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
from dataclasses import dataclass

import torch

from .checks import Check

# Graph replay runs the very kernels eager execution runs, on the same padded buffers: the audio is
# expected to be bit-identical (inf dB). 60 dB leaves room for a different cuBLAS algorithm inside a
# capture; a replay bug (a stale input buffer, a wrong bucket) leaves the audio uncorrelated (< 10 dB).
SAME_DTYPE_SNR_DB = 60.0
# bf16 keeps 8 significant bits (2^-9 = 0.2% rounding per op). Measured with teacher forcing on the
# full-size random 0.6B, bf16 vs fp32 on a CPU (torch 2.11, 3 frames): 1 - cosine = 1.4e-4 (talker
# code-0 logits) and 2.2e-4 (predictor), codec decode 38.9 dB; the tiny model: 1.4e-5, 2.3e-5, 36 dB.
# For small errors 1 - cos = r^2 / 2: 0.999 allows r = 4.5% relative error, ~5x the measured gap,
# while a real fault (a wrong cast, scale, RoPE position in low precision, overflow) drops the cosine
# well below it (10% weight noise on the tiny model already gives 0.987).
LOGIT_COSINE = 0.999
# 25 dB = 5.6% RMS error: ~14 dB below the bf16 decode measured above; a broken decode path gives
# ~0 dB (10% weight noise: 5.5 dB). Both thresholds are to be confirmed by the first bf16 GPU run.
CODEC_SNR_DB = 25.0

@dataclass(frozen=True)
class GraphRun:
    """What the engine reported about CUDA graphs, and the counter deltas over the graph run."""

    attempted: bool  # EngineConfig.use_cuda_graphs
    captured: int
    capture_error: str | None
    replays: int
    fallbacks: int
    snr_db: list[float]  # graph run vs eager run, per stream
    codes_equal: list[bool]
    graph_s: float  # wall time of the graph run and of the eager run
    eager_s: float


def environment(device: str) -> dict:
    """GPU name, driver, torch / CUDA / cuDNN versions: what every report must name."""
    import transformers

    info: dict = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "transformers": transformers.__version__,
                  "device": device, "gpu": None, "driver": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), driver=_driver_version())
    return info


def _driver_version() -> str:
    if shutil.which("nvidia-smi") is None:
        return "unknown (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc.__class__.__name__})"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def _db(value: float) -> str:
    return "inf dB" if math.isinf(value) else f"{value:.1f} dB"


def graph_checks(run: GraphRun, expect_eager: bool) -> list[Check]:
    """Checks 1-4: captured, replayed, no eager fallback, graph vs eager audio at the same dtype."""
    if run.capture_error is not None:  # attempted and failed: never what anyone expects
        first = Check(1, "graphs captured", "FAIL", f"capture failed, the engine ran eagerly: {run.capture_error}")
    elif run.captured > 0:
        first = Check(1, "graphs captured", "PASS", f"{run.captured} CUDA graphs, no capture error")
    elif expect_eager and not run.attempted:
        first = Check(1, "graphs captured", "SKIP", "not measured: CUDA graphs are off here (--expect-eager)")
    else:
        first = Check(1, "graphs captured", "FAIL",
                      "no CUDA graph captured: the engine runs eagerly here, so no graph check can pass"
                      + ("" if run.attempted else " (CUDA graphs are off for this device)"))
    if run.captured == 0:
        why = "not measured: no CUDA graph in use"
        return [first, Check(2, "graph replays", "SKIP", why), Check(3, "no eager fallbacks", "SKIP", why),
                Check(4, "graph vs eager, same dtype", "SKIP",
                      f"{why} (both runs were eager: {_db(min(run.snr_db))})" if run.snr_db else why)]
    worst = min(run.snr_db)
    return [
        first,
        Check(2, "graph replays", "PASS" if run.replays > 0 else "FAIL",
              f"{run.replays} stage runs replayed a graph during the graph run (need > 0)"),
        Check(3, "no eager fallbacks", "PASS" if run.fallbacks == 0 else "FAIL",
              f"{run.fallbacks} stage runs found no graph and ran eagerly during the graph run (need 0)"),
        Check(4, "graph vs eager, same dtype", "PASS" if worst >= SAME_DTYPE_SNR_DB else "FAIL",
              f"worst stream {_db(worst)} (need >= {SAME_DTYPE_SNR_DB:.0f} dB); "
              f"codes identical in {sum(run.codes_equal)}/{len(run.codes_equal)} streams; "
              f"graph run {run.graph_s:.2f} s, eager {run.eager_s:.2f} s",
              {"snr_db": run.snr_db, "codes_equal": run.codes_equal, "graph_s": run.graph_s, "eager_s": run.eager_s}),
    ]


def dtype_checks(test_dtype: str, reference_dtype: str, weights_equal: bool, agreements: list[dict],
                 engine_vs_reference_db: list[float]) -> list[Check]:
    """Checks 5-9: the test model against the reference dtype along the same (teacher-forced) codes."""
    pair = f"{test_dtype} vs {reference_dtype}"
    same = test_dtype == reference_dtype
    talker = sum(a["talker_cosine_mean"] for a in agreements) / len(agreements)
    predictor = sum(a["predictor_cosine_mean"] for a in agreements) / len(agreements)
    codec = min(a["codec_snr_db"] for a in agreements)

    def gap(number: int, name: str, ok: bool, summary: str) -> Check:
        if same:  # nothing to compare: e.g. the CPU, where EngineConfig refuses bf16
            return Check(number, name, "SKIP", f"not measured: the test dtype is the reference dtype ({summary})")
        return Check(number, name, "PASS" if ok else "FAIL", summary)

    engine_floor = SAME_DTYPE_SNR_DB if same else CODEC_SNR_DB
    engine_worst = min(engine_vs_reference_db)
    return [
        Check(5, "same weights as the reference", "PASS" if weights_equal else "FAIL",
              "every tensor equals the reference's rounded to the test dtype" if weights_equal else
              "the test and reference weights differ: the dtype comparison would be meaningless"),
        gap(6, f"talker code-0 logits, {pair}", talker >= LOGIT_COSINE,
            f"mean cosine {talker:.5f}, worst frame {min(a['talker_cosine_min'] for a in agreements):.5f} "
            f"(need mean >= {LOGIT_COSINE})"),
        gap(7, f"predictor logits, {pair}", predictor >= LOGIT_COSINE,
            f"mean cosine {predictor:.5f}, worst {min(a['predictor_cosine_min'] for a in agreements):.5f} "
            f"(need mean >= {LOGIT_COSINE})"),
        gap(8, f"codec decode of the same codes, {pair}", codec >= CODEC_SNR_DB,
            f"worst stream {_db(codec)} (need >= {CODEC_SNR_DB:.0f} dB)"),
        Check(9, f"engine output vs {reference_dtype} decode of its codes",
              "PASS" if engine_worst >= engine_floor else "FAIL",
              f"worst stream {_db(engine_worst)} from frame 1 on (need >= {engine_floor:.0f} dB)",
              {"snr_db": engine_vs_reference_db}),
    ]


def format_checks(checks: list[Check]) -> str:
    lines = [f"{c.status:4}  {c.number}. {c.name}: {c.summary}" for c in checks]
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "SKIP")}
    lines.append(f"gpu_check: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP"
                 + (" - SKIP means not measured, not passed" if counts["SKIP"] else ""))
    return "\n".join(lines)


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0
