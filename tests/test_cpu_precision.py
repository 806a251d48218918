"""The CPU fast path's precisions against float32, teacher-forced along the same codes (issue 15).

Fast: the tiny checkpoint, its linears forced to int8 (the size rule would leave them all float)
and a bf16 copy. Slow: the full-size random 0.6B as the engine loads it (quantize='int8' and
dtype='bfloat16'). Each must pass its documented QualityGate; speed is the benchmark's business.
"""

from __future__ import annotations

import pytest
import torch

from tts_engine import EngineConfig
from tts_engine.cpu_precision import MIN_INT8_FEATURES, cpu_has_int8_dot, quantize_linears_int8
from tts_engine.model_loading import load_model
from tts_engine.prompt import resolve_voice
from tts_engine.runner import ModelRunner
from tts_engine.teacher_forcing import QUALITY_GATES, Agreement, QualityGate, compare, teacher_force
from tts_engine.text_input import IncrementalTokenizer

TEXT = "Hello there, thanks for calling."
needs_int8 = pytest.mark.skipif(not cpu_has_int8_dot(), reason="no int8 dot products (VNNI/AMX) or no fbgemm")


def _runner(**kwargs) -> ModelRunner:
    cfg = EngineConfig(max_streams=1, max_context=256, do_sample=False, **kwargs)
    return ModelRunner(load_model(cfg), cfg)


def _agreements(source: dict, frames: int, force_int8: bool) -> dict[str, Agreement]:
    torch.set_num_threads(1)
    reference = _runner(**source, quantize="none")
    loaded = reference.loaded
    voice = resolve_voice(loaded.talker_config, "ryan", "english", loaded.languages)
    text_ids = IncrementalTokenizer(loaded.tokenizer).tokenize_all(TEXT)
    codes = torch.randint(0, 2048, (frames, 16), generator=torch.Generator().manual_seed(0))
    ref = teacher_force(reference, voice, text_ids, codes)
    out = {}
    variants = {"bf16": dict(dtype="bfloat16", quantize="none")}
    if cpu_has_int8_dot():
        variants["int8"] = dict(quantize="none" if force_int8 else "int8")
    for name, kwargs in variants.items():
        runner = _runner(**source, **kwargs)
        if name == "int8" and force_int8:
            talker = runner.talker
            assert quantize_linears_int8(talker.model, 0) + quantize_linears_int8(talker.code_predictor, 0) > 0
        out[name] = compare(ref, teacher_force(runner, voice, text_ids, codes))
    return out


def test_gate_names_each_threshold_missed():
    gate = QualityGate(logit_cosine_mean=0.99, logit_cosine_min=0.98, codec_snr_db=30.0)
    good = Agreement(frames=2, talker_cosine_mean=0.995, talker_cosine_min=0.99, predictor_cosine_mean=0.995,
                     predictor_cosine_min=0.99, talker_argmax_agreement=1.0, predictor_argmax_agreement=1.0,
                     codec_snr_db=float("inf"))
    assert gate.failures(good) == []
    bad = Agreement(frames=2, talker_cosine_mean=0.98, talker_cosine_min=0.97, predictor_cosine_mean=0.995,
                    predictor_cosine_min=0.9, talker_argmax_agreement=1.0, predictor_argmax_agreement=1.0,
                    codec_snr_db=20.0)
    assert len(gate.failures(bad)) == 4


def test_the_size_rule_leaves_the_tiny_checkpoint_exact(tiny_checkpoint):
    # its linears are all below MIN_INT8_FEATURES: quantize='int8' changes nothing
    runner = _runner(model=tiny_checkpoint, quantize="int8")
    assert runner.cfg.use_int8 and runner.loaded.int8_linears == 0
    linears = [m for m in runner.talker.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(min(m.in_features, m.out_features) < MIN_INT8_FEATURES for m in linears)


def test_the_codec_goes_bf16_only_when_large_and_supported(tiny_checkpoint):
    from tts_engine.cpu_precision import MIN_BF16_CODEC_DIM, codec_dtype, cpu_has_bf16

    cfg = EngineConfig(model=tiny_checkpoint)
    assert codec_dtype(cfg, MIN_BF16_CODEC_DIM - 1) == torch.float32  # the tiny decoder: exact
    assert codec_dtype(cfg, MIN_BF16_CODEC_DIM) == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert codec_dtype(EngineConfig(model=tiny_checkpoint, codec_dtype="float32"), 4096) == torch.float32
    assert _runner(model=tiny_checkpoint, codec_dtype="bfloat16").decoder.dtype == torch.bfloat16


@needs_int8
def test_int8_linears_are_swapped_in_place(tiny_checkpoint):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    runner = _runner(model=tiny_checkpoint, quantize="none")
    predictor = runner.talker.code_predictor
    count = quantize_linears_int8(predictor, 0)
    assert count > 0 and sum(isinstance(m, DynamicLinear) for m in predictor.modules()) == count
    assert not any(type(m) is torch.nn.Linear for m in predictor.modules())


def test_tiny_precisions_pass_their_gates(tiny_checkpoint):
    for name, agreement in _agreements({"model": tiny_checkpoint}, frames=12, force_int8=True).items():
        assert QUALITY_GATES[name].failures(agreement) == [], (name, agreement)


@pytest.mark.slow
def test_full_size_precisions_pass_their_gates():
    for name, agreement in _agreements({"random_weights": "0.6b"}, frames=6, force_int8=False).items():
        assert QUALITY_GATES[name].failures(agreement) == [], (name, agreement)


def test_engine_threads_leave_a_core_and_never_exceed_what_the_process_allows(monkeypatch):
    from tts_engine import cpu_precision
    from tts_engine.cpu_precision import apply_engine_cpu_threads, engine_cpu_threads

    monkeypatch.setattr(cpu_precision, "usable_cores", lambda: 2)
    assert engine_cpu_threads(None) == 1  # 2 cores: one for the engine, one for the rest
    assert engine_cpu_threads(2) == 2  # asked for explicitly
    monkeypatch.setattr(cpu_precision, "usable_cores", lambda: 16)
    assert engine_cpu_threads(None) == 1  # the tests pinned torch to one thread: never raised
    monkeypatch.setattr(cpu_precision.torch, "get_num_threads", lambda: 16)
    assert engine_cpu_threads(None) == 15
    monkeypatch.setattr(cpu_precision, "usable_cores", lambda: 1)
    assert engine_cpu_threads(None) == 1
    with pytest.raises(ValueError, match="cpu_threads"):
        EngineConfig(random_weights="0.6b", cpu_threads=0)
    assert apply_engine_cpu_threads(EngineConfig(random_weights="0.6b", device="cuda", cpu_threads=3)) is None


def test_the_engine_sets_torch_threads_on_start(tiny_checkpoint):
    from tts_engine import TTSEngine, cpu_precision

    try:
        with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=1, cpu_threads=2)) as engine:
            assert engine.cpu_threads == 2 and torch.get_num_threads() == 2
        with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=1)) as engine:
            auto = max(1, min(2, cpu_precision.usable_cores() - 1))  # torch allowed 2: cores - 1, at most 2
            assert engine.cpu_threads == auto and torch.get_num_threads() == auto
    finally:
        torch.set_num_threads(1)
