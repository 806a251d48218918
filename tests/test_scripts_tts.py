"""The benchmark and regression scripts, run as a user runs them (subprocesses on the tiny checkpoint)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _run_script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = _run_script("bench_tts.py", "--random-weights", "tiny", "--frames", "8", "--runs", "2",
                       "--streams", "1,2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "TTFP" in proc.stdout and "engine/package" in proc.stdout  # the printed table
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("regression") / "regression.json"
    proc = _run_script("tts_regression.py", "--fast", "--json", str(out))
    return proc, json.loads(out.read_text())


@pytest.mark.slow  # subprocesses that import torch and qwen-tts: seconds each
def test_bench_reports_latency_rtf_and_underruns_per_stream_count(bench):
    assert bench["config"]["frames"] == 8 and bench["config"]["threads"] == 1
    assert _positive(bench["model"]["load_s"]) and _positive(bench["model"]["build_s"])
    assert [s["streams"] for s in bench["streams"]] == [1, 2]
    for s in bench["streams"]:
        assert s["frames_per_stream"] == 8
        assert s["ttfp_ms"]["n"] == 2 * s["streams"]  # runs x streams
        assert _positive(s["ttfp_ms"]["p50"]) and s["ttfp_ms"]["p95"] >= s["ttfp_ms"]["p50"]
        assert s["ttfp_ms"]["p95"] < 30_000  # generous: the tiny model's first packet takes milliseconds
        assert _positive(s["rtf_stream"]["mean"]) and _positive(s["rtf_throughput"])
        assert s["packets"] == 2 * s["streams"] * 8 * 4  # 4 packets of 20 ms per 80 ms frame
        assert 0 <= s["underrun_rate"] <= 1 and s["underruns"] <= s["packets"]
    assert bench["peak_gpu_mem_bytes"] is None  # CPU run


@pytest.mark.slow
def test_bench_splits_frame_time_and_compares_with_the_package(bench):
    split = bench["frame_split_ms"]
    for stage in ("talker", "predictor", "codec", "total"):
        assert split[stage]["n"] == 8 and _positive(split[stage]["mean"]) and _positive(split[stage]["p95"])
    assert split["total"]["mean"] == pytest.approx(
        split["talker"]["mean"] + split["predictor"]["mean"] + split["codec"]["mean"], rel=1e-6)
    base = bench["baseline"]
    for key in ("generate_ms_per_frame", "codec_whole_ms_per_frame", "codec_windowed_ms_per_frame",
                "codec_windowed_steady_ms_per_frame"):
        assert _positive(base[key]), key
    assert all(_positive(v) for v in bench["ratios"].values()), bench["ratios"]


@pytest.mark.slow
def test_bench_rejects_bad_arguments():
    proc = _run_script("bench_tts.py", "--random-weights", "tiny", "--streams", "1,x")
    assert proc.returncode == 2 and "--streams" in proc.stderr


@pytest.mark.slow
def test_regression_suite_passes_on_the_tiny_checkpoint(regression):
    proc, report = regression
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert report["passed"] is True
    checks = report["checks"]
    assert [c["number"] for c in checks] == [1, 2, 3, 4, 5]
    assert all(c["status"] == "PASS" for c in checks), [(c["name"], c["status"], c["summary"]) for c in checks]
    for c in checks:
        assert f"[{c['number']}/5] {c['name']}: PASS" in proc.stdout
    assert checks[0]["details"]["runs"] == 3  # --fast
    assert report["golden_min_snr_db"] >= 60


def test_golden_file_says_what_it_is_valid_for():
    with np.load(ROOT / "tests" / "golden" / "tiny_golden.npz", allow_pickle=False) as data:
        note, meta = str(data["note"]), json.loads(str(data["meta"]))
        assert "seed=0" in note and "tiny" in note.lower()
        assert len(meta["fingerprint"]) == 64 and len(meta["cases"]) >= 2
        for i in range(len(meta["cases"])):
            assert len(data[f"audio_{i}"]) == meta["frames"] * 1920


def test_loop_detector_finds_back_to_back_repeats():
    sys.path.insert(0, str(SCRIPTS))
    try:
        from tts_bench.checks import longest_repeat
    finally:
        sys.path.remove(str(SCRIPTS))
    rng = np.random.default_rng(0)
    fresh = rng.permutation(2048)[:100]
    assert longest_repeat(fresh)[0] == 1
    loop = np.concatenate([fresh[:10], np.tile(fresh[50:59], 5), fresh[10:30]])  # a 9-frame n-gram, 5 times
    assert longest_repeat(loop)[:2] == (5, 9)
    assert longest_repeat(np.tile(fresh[:3], 30))[0] >= 4  # a short cycle repeats as longer n-grams too
