"""The CPU fast path: what the running CPU supports, and int8 linears for the talker and predictor.

Measured on a 2-core AVX-512/AMX Xeon (issue 15, docs/benchmarks.md): at batch 1 every step is a
chain of matrix-vector products, bound by weight traffic and per-call overhead, not arithmetic.
bf16 weights do not help there (oneDNN's bf16 gemv at M=1 runs no faster than fp32: 0.25 vs 0.23 ms
for a 1024x3072 linear), while dynamic int8 linears (fbgemm: int8 weights per output channel,
activations quantized per call, VNNI dot products) run the same linear in 0.06 ms. Below ~256
features the per-call activation quantization costs more than it saves, so small linears stay as
they are (which also leaves the tiny test checkpoint exact).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# a linear with fewer input or output features than this stays in floating point
MIN_INT8_FEATURES = 256
# a codec decoder narrower than this stays in the engine dtype: bf16 pays on the full-size decoder's
# convs (1536 channels: 68 -> 50 ms per frame on 2 threads) and costs on small ones (tiny: 4 -> 7 ms)
MIN_BF16_CODEC_DIM = 256
_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_int8_dot() -> bool:
    """Int8 dot-product instructions (VNNI or AMX) and the fbgemm quantized backend are both here."""
    return any(f in cpu_flags() for f in _INT8_FLAGS) and "fbgemm" in torch.backends.quantized.supported_engines


def cpu_has_bf16() -> bool:
    return any(f in cpu_flags() for f in _BF16_FLAGS)


def engine_cpu_threads(requested: int | None) -> int:
    """Torch intra-op threads for a CPU engine: `requested`, or one fewer than torch's own count (every
    core, or OMP_NUM_THREADS / an earlier torch.set_num_threads), at least 1. Never more than the
    process already allows, so a caller that pinned torch to one thread keeps it."""
    if requested is not None:
        return requested
    return max(1, min(torch.get_num_threads(), usable_cores() - 1))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or a cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


def apply_engine_cpu_threads(cfg: Any) -> int | None:
    """Set torch's thread count for the engine under `cfg` (an EngineConfig) on the CPU; return it,
    or None on CUDA (the host threads only launch kernels there: torch's default stays)."""
    if cfg.device.startswith("cuda"):
        return None
    threads = engine_cpu_threads(cfg.cpu_threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("TTS engine on the CPU: %d torch thread(s), %d usable cores (cpu_threads=%s)", threads, usable_cores(),
             cfg.cpu_threads)
    return threads


def codec_dtype(cfg: Any, decoder_dim: int) -> torch.dtype:
    """The speech decoder's dtype under `cfg` (an EngineConfig) for a decoder of `decoder_dim` channels."""
    if cfg.codec_dtype is not None:
        return getattr(torch, cfg.codec_dtype)
    if not cfg.device.startswith("cuda") and cpu_has_bf16() and decoder_dim >= MIN_BF16_CODEC_DIM:
        return torch.bfloat16
    return cfg.torch_dtype


def quantize_linears_int8(module: nn.Module, min_features: int = MIN_INT8_FEATURES) -> int:
    """Replace, in place, every float32 nn.Linear under `module` with at least `min_features` input
    and output features by a dynamic int8 linear (per-channel weights); return how many."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    targets = [(name, child) for name, child in module.named_modules()
               if type(child) is nn.Linear and child.weight.dtype == torch.float32
               and min(child.in_features, child.out_features) >= min_features]
    previous = torch.backends.quantized.engine
    # the packed weights keep the engine they were packed for; it is only needed while packing
    torch.backends.quantized.engine = "fbgemm"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's eager quantization API announces its move to torchao
            for name, linear in targets:
                linear.qconfig = per_channel_dynamic_qconfig  # type: ignore[assignment]
                quantized = DynamicLinear.from_float(linear)
                parent_name, _, attr = name.rpartition(".")
                parent: Any = module.get_submodule(parent_name) if parent_name else module
                if isinstance(parent, (nn.ModuleList, nn.Sequential)):
                    parent[int(attr)] = quantized
                else:
                    setattr(parent, attr, quantized)
    finally:
        torch.backends.quantized.engine = previous
    return len(targets)

