"""scripts/gpu_check.py fails when it should, and teacher forcing compares what it claims to compare.

On the CPU no CUDA graph exists, so these tests check the verdicts (no graphs or a failed capture
is a non-zero exit, never a PASS) and the teacher-forcing comparison itself (identical models agree
exactly, a perturbed copy clearly does not, and a forced run reproduces the engine's own choices).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from testing.tts_bench import gpu_check
from testing.tts_bench.gpu_checks import (
    CODEC_SNR_DB,
    LOGIT_COSINE,
    SAME_DTYPE_SNR_DB,
    GraphRun,
    dtype_checks,
    exit_code,
    format_checks,
    graph_checks,
)
from tts_engine import EngineConfig, SchedulerConfig, TTSEngine
from tts_engine.graph_runner import StepRunner
from tts_engine.model_loading import load_model
from tts_engine.prompt import resolve_voice
from tts_engine.runner import ModelRunner
from tts_engine.sampling import apply_repetition_penalty, talker_logit_mask
from tts_engine.teacher_forcing import compare, compare_runners, teacher_force
from tts_engine.text_input import IncrementalTokenizer

torch.set_num_threads(1)


TEXT = "Teacher forcing keeps both runs on the same codes."
FRAMES = 8


def _check_run(tiny_checkpoint: str, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--model", tiny_checkpoint, "--device", "cpu", "--frames", "6", "--streams", "1",
                           "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def _status(report: dict) -> dict[int, str]:
    return {c["number"]: c["status"] for c in report["checks"]}


def test_on_the_cpu_no_graphs_means_a_non_zero_exit_that_says_why(tiny_checkpoint, tmp_path, capsys):
    code, report = _check_run(tiny_checkpoint, tmp_path)
    assert code != 0
    assert "FAIL  1. graphs captured: no CUDA graph captured" in capsys.readouterr().out
    status = _status(report)
    assert status[1] == "FAIL"
    # nothing that was not measured reads PASS: graph checks and the (absent) dtype gap are SKIP
    assert [status[n] for n in (2, 3, 4, 6, 7, 8)] == ["SKIP"] * 6
    assert status[5] == status[9] == "PASS"  # what a CPU run does measure: same weights, teacher-forced decode


def test_expect_eager_runs_the_rest_as_a_smoke_test(tiny_checkpoint, tmp_path, capsys):
    code, report = _check_run(tiny_checkpoint, tmp_path, "--expect-eager")
    assert code == 0, capsys.readouterr().out
    assert _status(report)[1] == "SKIP"
    assert "SKIP means not measured" in capsys.readouterr().out
    assert report["max_context"] == EngineConfig.max_context  # the default context, not a smaller one


def _failing_capture(self):
    raise RuntimeError("forced capture failure")


def test_a_failed_capture_is_recorded_and_the_engine_still_serves(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(StepRunner, "capture", _failing_capture)
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=1)) as engine:
        stats = engine.stats()
        assert stats["graph_capture_error"] == "RuntimeError: forced capture failure"
        assert stats["cuda_graphs"] == 0 and stats["graph_replays"] == 0
        wav, _rate = engine.synthesize("Still speaking.", speaker="ryan", language="english", max_frames=2)
    assert len(wav) == 2 * 1920  # a capture problem costs speed, never the service


def test_a_forced_capture_failure_fails_the_check_even_when_eager_is_expected(tiny_checkpoint, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setattr(StepRunner, "capture", _failing_capture)
    code, report = _check_run(tiny_checkpoint, tmp_path, "--expect-eager")
    assert code != 0
    assert "capture failed, the engine ran eagerly: RuntimeError: forced capture failure" in capsys.readouterr().out
    assert _status(report)[1] == "FAIL"


def _graph_run(**changes) -> GraphRun:
    good = dict(attempted=True, captured=48, capture_error=None, replays=432, fallbacks=0,
                snr_db=[math.inf, 80.0], codes_equal=[True, True], graph_s=1.0, eager_s=3.0)
    return GraphRun(**{**good, **changes})


@pytest.mark.parametrize("changes,failing", [
    ({}, []),
    ({"replays": 0}, [2]),
    ({"fallbacks": 3}, [3]),
    ({"snr_db": [math.inf, SAME_DTYPE_SNR_DB - 1]}, [4]),
])
def test_the_graph_verdicts_a_gpu_run_reaches(changes, failing):
    """The branches only a GPU run takes, fed the numbers such a run reports."""
    checks = graph_checks(_graph_run(**changes), expect_eager=False)
    assert [c.number for c in checks if c.status == "FAIL"] == failing
    assert all(c.status == "PASS" for c in checks if c.number not in failing)
    assert exit_code(checks) == (1 if failing else 0)
    assert f"{len(failing)} FAIL" in format_checks(checks)


def _agreement(cosine: float, snr: float) -> dict:
    return {"talker_cosine_mean": cosine, "talker_cosine_min": cosine, "predictor_cosine_mean": cosine,
            "predictor_cosine_min": cosine, "codec_snr_db": snr}


def test_the_dtype_verdicts_of_a_bf16_run():
    good = dtype_checks("bfloat16", "float32", True, [_agreement(0.9999, 38.0)] * 2, [37.0, 39.0])
    assert [c.status for c in good] == ["PASS"] * 5
    bad = dtype_checks("bfloat16", "float32", True, [_agreement(LOGIT_COSINE - 0.01, CODEC_SNR_DB - 1)],
                       [CODEC_SNR_DB - 1])
    assert [c.status for c in bad] == ["PASS", "FAIL", "FAIL", "FAIL", "FAIL"]
    assert dtype_checks("bfloat16", "float32", False, [_agreement(1.0, 99.0)], [99.0])[0].status == "FAIL"


@pytest.fixture(scope="module")
def greedy_run(tiny_checkpoint):
    """A closed greedy engine (its runner is free to use) and the codes one stream of TEXT produced."""
    engine = TTSEngine(EngineConfig(model=tiny_checkpoint, do_sample=False, max_streams=1,
                                    scheduler=SchedulerConfig(max_lead_s=None)))
    with engine:
        stream = engine.open_stream(speaker="ryan", language="english", max_frames=FRAMES)
        stream.push_text(TEXT)
        stream.end_text()
        for _ in stream:
            pass
    voice = resolve_voice(engine.loaded.talker_config, "ryan", "english", engine.languages)
    text_ids = IncrementalTokenizer(engine.text_tokenizer).tokenize_all(TEXT)
    return engine, voice, text_ids, stream.codes


def test_teacher_forcing_reproduces_the_engines_own_greedy_choices(greedy_run):
    engine, voice, text_ids, codes = greedy_run
    run = teacher_force(engine.runner, voice, text_ids, codes)
    assert run.talker_logits.shape == (FRAMES, engine.runner.tc.vocab_size)
    assert run.predictor_logits.shape == (FRAMES, 15, 2048) and run.audio.shape == (FRAMES * 1920,)
    # codebooks 1-15: greedy takes the argmax of the very logits teacher forcing read
    assert torch.equal(run.predictor_logits.argmax(-1), torch.as_tensor(codes[:, 1:]))
    # code 0: the same after the engine's rules (repetition penalty, suppressed ids, no early EOS)
    rules = engine.runner.rules
    mask = talker_logit_mask(run.talker_logits.shape[1], engine.runner.eos_id, "cpu")
    seen = torch.zeros(run.talker_logits.shape[1], dtype=torch.bool)
    for t in range(FRAMES):
        logits = apply_repetition_penalty(run.talker_logits[t], seen, rules.repetition_penalty) + mask
        if t < rules.min_new_tokens:
            logits[engine.runner.eos_id] = -math.inf
        assert int(logits.argmax()) == int(codes[t, 0]), f"frame {t}"
        seen[int(codes[t, 0])] = True


def test_the_same_model_agrees_exactly_and_a_perturbed_copy_does_not(greedy_run, tiny_checkpoint):
    engine, voice, text_ids, codes = greedy_run
    reference = teacher_force(engine.runner, voice, text_ids, codes)
    same = compare(reference, teacher_force(engine.runner, voice, text_ids, codes))
    assert same.talker_cosine_min == pytest.approx(1.0, abs=1e-12)
    assert same.predictor_cosine_min == pytest.approx(1.0, abs=1e-12)
    assert same.codec_snr_db >= 100  # bit-identical on the CPU: inf
    assert same.talker_argmax_agreement == same.predictor_argmax_agreement == 1.0

    cfg = EngineConfig(model=tiny_checkpoint, do_sample=False, max_streams=1)
    noisy = ModelRunner(load_model(cfg), cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in (noisy.loaded.model, noisy.loaded.speech_decoder):
            for p in module.parameters():
                if p.is_floating_point() and p.numel() > 1:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1 * p.std())  # 10% weight noise
    off = compare_runners(engine.runner, noisy, voice, text_ids, codes)
    # each number falls below gpu_check's threshold: the comparison is not vacuous
    assert off.talker_cosine_mean < LOGIT_COSINE and off.predictor_cosine_mean < LOGIT_COSINE
    assert off.codec_snr_db < CODEC_SNR_DB
