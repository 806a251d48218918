"""The full-size architectures with random weights: what benchmarks and GPU checks run on."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from tts_engine import EngineConfig, SamplingConfig, TTSEngine


@pytest.mark.slow
def test_full_size_0b6_random_engine_streams_on_cpu():
    cfg = EngineConfig(random_weights="0.6b", max_streams=1, max_context=128,
                       sampling=SamplingConfig(min_new_tokens=4))
    with TTSEngine(cfg) as engine:
        model = engine.loaded.model
        # the CPU default packs the large linears as int8 (EngineConfig.quantize): their weights are
        # no longer parameters, so they are counted from the packed modules
        packed = [m for m in model.modules() if isinstance(m, DynamicLinear)]
        params = sum(p.numel() for p in model.parameters()) + sum(
            m.weight().numel() + (0 if m.bias() is None else m.bias().numel()) for m in packed)
        assert 900e6 < params < 910e6  # 905.8M as released
        assert bool(packed) == engine.config.use_int8
        stream = engine.open_stream(speaker="serena", language="english", max_frames=3)
        stream.push_text("Full size, random weights.")
        stream.end_text()
        packets = list(stream)
    assert len(packets) == 12
    assert stream.codes.shape == (3, 16)
    assert any(np.abs(p.pcm).max() > 0 for p in packets)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graph_replay_matches_eager_on_gpu(tmp_path):
    """Full-size 0.6B bf16: graph vs eager audio SNR >= 60 dB for the same seed."""
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, "scripts/gpu_check.py", "--random-weights", "0.6b",
                             "--device", "cuda", "--dtype", "bfloat16", "--json", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
