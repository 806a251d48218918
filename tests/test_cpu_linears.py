"""The CPU linears benchmark (scripts/bench_cpu_linears.py): right shapes, right formats, its table."""

from __future__ import annotations

import torch

from testing.tts_bench.linears import _Int4WeightOnly, format_table, frame_layers, measure
from tts_engine.cpu_precision import cpu_has_int8_dot


def test_a_frame_streams_the_talker_once_and_the_predictor_per_codebook_step():
    shapes, talker_layers, predictor_layers = frame_layers("0.6b")
    assert (talker_layers, predictor_layers) == (28, 5)
    assert shapes.weights == (2 + 1 + 1 + 2 + 3 + 3 + 3) * 1024 * 1024  # q k v o gate up down


def test_the_int4_packing_computes_the_same_linear():
    torch.manual_seed(0)
    weight = torch.randn(256, 512) * 0.02
    x = torch.randn(3, 512)
    got = _Int4WeightOnly(weight)(x).float()
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), (x @ weight.T).flatten(), dim=0)
    assert cosine > 0.99  # 16 levels per group of 128: close, not exact


def test_measure_reports_every_format_and_the_floor():
    formats = ["fp32", "int4"] + (["int8"] if cpu_has_int8_dot() else [])
    lines: list[str] = []
    result = measure("0.6b", [1], formats, reps=1, progress=lines.append)
    row = result["by_threads"]["1"]
    assert row["read_gbs"] > 0 and set(row["formats"]) == set(formats)
    for fmt, r in row["formats"].items():
        assert r["ms"] > 0 and r["frame_linears_ms"] == round(r["ms"] / 5 * result["frame_layer_reads"], 1), fmt
    # the floor scales with the bytes per weight: int4 streams an eighth of fp32
    assert abs(row["formats"]["int4"]["frame_floor_ms"] * 8 - row["formats"]["fp32"]["frame_floor_ms"]) < 1.0
    assert "103 layers" in format_table(result) and len(lines) == 1 + len(formats)
