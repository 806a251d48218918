"""Where the CPU fast path stops: one frame's batch-1 linears against the memory they stream.

Every talker and code-predictor step multiplies one row by each layer's weights, so at batch 1 a
step reads every weight once and does two flops per weight read: its time is set by how fast the
core streams weights, not by arithmetic. A frame reads the talker's layers once and the code
predictor's layers once per codebook step (15 of them), so one frame streams
`talker_layers + 15 * predictor_layers` layers of weights. This module times one pass over a
model's layers of linears (random weights, the full-size shapes) in each weight format, next to the
core's plain read bandwidth, and turns both into a per-frame floor.

Formats: fp32; bf16 (oneDNN); int8 as the engine runs it (`cpu_precision.quantize_linears_int8`:
fbgemm dynamic, per-channel); int4 weight-only (groups of 128, bf16 activations, torch's
`_weight_int4pack_mm_for_cpu`) - the engine does not use int4, it is measured to show what it would
buy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tts_engine import architectures as arch
from tts_engine.cpu_precision import quantize_linears_int8

FORMATS = ("fp32", "bf16", "int8", "int4")
BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
INT4_GROUP = 128
READ_MB = 320  # the bandwidth probe's buffer: far larger than any cache level's share of one core


@dataclass(frozen=True)
class LayerShapes:
    """The (out, in) shapes of one decoder layer's linears: q, k, v, o, gate, up, down."""

    shapes: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, cfg: dict[str, Any]) -> LayerShapes:
        d, heads, kv, hd, ff = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                                cfg["head_dim"], cfg["intermediate_size"])
        return cls(((heads * hd, d), (kv * hd, d), (kv * hd, d), (d, heads * hd), (ff, d), (ff, d), (d, ff)))

    @property
    def weights(self) -> int:
        return sum(o * i for o, i in self.shapes)


def frame_layers(size: str) -> tuple[LayerShapes, int, int]:
    """(one layer's shapes, talker layers, predictor layers) of a full-size model; the talker and the
    predictor share the layer shape in both sizes' configs (checked)."""
    talker = arch.talker_config(size)
    predictor = talker["code_predictor_config"]
    shapes = LayerShapes.of(predictor)
    if LayerShapes.of(talker) != shapes:
        raise ValueError(f"{size}: the talker's and the predictor's layers differ; time them apart")
    return shapes, talker["num_hidden_layers"], predictor["num_hidden_layers"]


class _Int4WeightOnly(nn.Module):
    """Asymmetric int4 per group of INT4_GROUP inputs, packed for torch's CPU int4 kernel."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        groups = weight.float().view(out_features, in_features // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-8)
        levels = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).view(out_features, in_features)
        self.packed = torch._convert_weight_to_int4pack_for_cpu(levels, 1)
        # the kernel computes (level - 8) * scale + zero
        zero = low + 8 * scale
        self.scale_zero = torch.stack((scale[..., 0], zero[..., 0]), -1).transpose(0, 1).contiguous().bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x.bfloat16(), self.packed, INT4_GROUP, self.scale_zero)


def _layer_stack(shapes: LayerShapes, layers: int, fmt: str, seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    linears = nn.ModuleList()
    for _ in range(layers):
        for out_f, in_f in shapes.shapes:
            linear = nn.Linear(in_f, out_f, bias=False)
            nn.init.normal_(linear.weight, std=0.02)
            linears.append(linear)
    if fmt == "bf16":
        linears.to(torch.bfloat16)
    elif fmt == "int8":
        quantize_linears_int8(linears)
    elif fmt == "int4":
        linears = nn.ModuleList(_Int4WeightOnly(m.get_parameter("weight").detach()) for m in linears)
    return list(linears)


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def read_bandwidth_gbs(reps: int = 5) -> float:
    """The core(s)' plain streaming read rate: a sum over a READ_MB buffer, in GB/s."""
    buf = torch.ones(READ_MB * 2**20 // 4)
    ms = _median_ms(buf.sum, reps)
    return buf.numel() * 4 / ms / 1e6


def time_layer_pass(shapes: LayerShapes, layers: int, fmt: str, reps: int = 10) -> dict[str, float]:
    """One batch-1 pass over `layers` layers' linears in `fmt`: ms, and the weight bytes it streamed
    per second (GB/s)."""
    stack = _layer_stack(shapes, layers, fmt)
    dtype = torch.bfloat16 if fmt == "bf16" else torch.float32
    inputs = {i: torch.randn(1, i, dtype=dtype) for _, i in shapes.shapes}
    feeds = [inputs[i] for _ in range(layers) for _, i in shapes.shapes]

    def one_pass() -> None:
        for module, x in zip(stack, feeds, strict=True):
            module(x)

    with torch.inference_mode():
        ms = _median_ms(one_pass, reps)
    streamed = shapes.weights * layers * BYTES_PER_WEIGHT[fmt]
    return {"ms": round(ms, 3), "weight_gbs": round(streamed / ms / 1e6, 2)}


def measure(size: str, threads: list[int], formats: list[str], reps: int,
            progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Per thread count: read bandwidth, and per format one predictor-depth pass and the per-frame
    linear time it implies (talker once + predictor per codebook step) against the bandwidth floor."""
    shapes, talker_layers, predictor_layers = frame_layers(size)
    steps = arch.talker_config(size)["num_code_groups"] - 1
    frame_layer_count = talker_layers + steps * predictor_layers
    out: dict[str, Any] = {"size": size, "layer_weights": shapes.weights, "talker_layers": talker_layers,
                           "predictor_layers": predictor_layers, "predictor_steps": steps,
                           "frame_layer_reads": frame_layer_count, "by_threads": {}}
    previous = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            row: dict[str, Any] = {"read_gbs": round(read_bandwidth_gbs(), 2), "formats": {}}
            progress(f"{n} thread(s): read bandwidth {row['read_gbs']} GB/s")
            for fmt in formats:
                timed = time_layer_pass(shapes, predictor_layers, fmt, reps)
                per_layer = timed["ms"] / predictor_layers
                floor = shapes.weights * frame_layer_count * BYTES_PER_WEIGHT[fmt] / row["read_gbs"] / 1e6
                row["formats"][fmt] = {**timed, "frame_linears_ms": round(per_layer * frame_layer_count, 1),
                                       "frame_floor_ms": round(floor, 1)}
                progress(f"  {fmt}: {timed['ms']} ms per {predictor_layers}-layer pass, "
                         f"{timed['weight_gbs']} GB/s of weights")
            out["by_threads"][str(n)] = row
    finally:
        torch.set_num_threads(previous)
    return out


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['size']}: one frame streams {result['frame_layer_reads']} layers of "
             f"{result['layer_weights'] / 1e6:.1f}M weights ({result['talker_layers']} talker + "
             f"{result['predictor_steps']} x {result['predictor_layers']} predictor)",
             "threads  format  pass ms  weights GB/s  frame linears ms  floor at read bandwidth ms"]
    for n, row in result["by_threads"].items():
        for fmt, r in row["formats"].items():
            lines.append(f"{n:>7}  {fmt:<6}  {r['ms']:>7.2f}  {r['weight_gbs']:>12.2f}  "
                         f"{r['frame_linears_ms']:>16.1f}  {r['frame_floor_ms']:>10.1f} ({row['read_gbs']} GB/s)")
    return "\n".join(lines)
