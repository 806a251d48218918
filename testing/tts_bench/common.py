"""What both TTS scripts share: where the model comes from, threads, timing and statistics."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from agent.observe.trace_stats import percentile
from tts_engine.cpu_precision import usable_cores

T = TypeVar("T")

# Different texts so concurrent streams do not run identical work (and identical prompts).
TEXTS = (
    "Hello there, thanks for calling. How can I help you today?",
    "The quick brown fox jumps over the lazy dog, again and again.",
    "Sure, let me think about that for a second before I answer you.",
    "Today the weather is fine, with a light breeze coming from the west.",
    "Your order has shipped and should arrive on Thursday afternoon.",
    "I am sorry, I did not catch that. Could you say it once more?",
)


def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class ModelSource:
    """The model part of an EngineConfig, and what it cost to prepare."""

    name: str
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # model=DIR or random_weights=SIZE
    built_tiny: bool = False  # the tiny checkpoint was built here with seed 0
    build_s: float = 0.0


@contextlib.contextmanager
def model_source(model: str | None, random_weights: str | None) -> Iterator[ModelSource]:
    """`model` folder, a full-size random model, or ('tiny') a tiny checkpoint in a temp folder."""
    if model is not None:
        yield ModelSource(name=model, engine_kwargs={"model": model})
        return
    if random_weights != "tiny":
        yield ModelSource(name=f"random-{random_weights}", engine_kwargs={"random_weights": random_weights})
        return
    from tts_engine.tiny_checkpoint import build_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="tiny-qwen3-tts-") as tmp:
        start = time.perf_counter()
        path = build_tiny_checkpoint(os.path.join(tmp, "ckpt"), seed=0)
        yield ModelSource(name="tiny (seed 0)", engine_kwargs={"model": str(path)}, built_tiny=True,
                          build_s=time.perf_counter() - start)


def set_threads(threads: int | None, device: str) -> int:
    """Default 1 thread on the CPU: on a small loaded box more OpenMP threads slow small ops a lot."""
    if threads is None and not device.startswith("cuda"):
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def is_cuda(device: str) -> bool:
    return device.startswith("cuda") and torch.cuda.is_available()


def synchronize(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """(fn(*args), seconds) with the device drained before and after, so queued kernels count where they run."""
    synchronize(device)
    start = time.perf_counter()
    out = fn(*args)
    synchronize(device)
    return out, time.perf_counter() - start


def ms_summary(seconds: list[float]) -> dict[str, float | int]:
    """p50 / p95 / mean / max in milliseconds of a list of durations in seconds."""
    if not seconds:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "mean": math.nan, "max": math.nan}
    ms = [s * 1000.0 for s in seconds]
    p50, p95 = percentile(ms, 50), percentile(ms, 95)
    assert p50 is not None and p95 is not None  # ms is not empty
    return {"n": len(ms), "p50": p50, "p95": p95, "mean": float(np.mean(ms)), "max": max(ms)}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


# CPU features that decide which fp32 / bf16 kernels torch can use on this machine
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo() -> tuple[str | None, list[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; (None, []) where there is none."""
    model: str | None = None
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # Features: Arm
                    flags = value.split()
                if model is not None and flags:
                    break
    except OSError:
        pass
    return model, flags


def machine_info() -> dict[str, Any]:
    """What a CPU timing depends on: the CPU and its vector/matrix flags, torch and its threads, and the
    load average (other jobs on the cores make ratios of paths timed one after another unreliable)."""
    model, flags = _cpuinfo()
    return {
        "cpu_model": model or platform.processor() or None,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS} if flags else None,
        "cpu_count": os.cpu_count(), "cpus_usable": usable_cores(),
        "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "host": platform.node(), "nice": os.nice(0), "load_avg_start": load_average(),
    }


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
