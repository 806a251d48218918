"""What both TTS scripts share: where the model comes from, threads, timing and statistics."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

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
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"n": len(ms), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean()), "max": float(ms.max())}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b
