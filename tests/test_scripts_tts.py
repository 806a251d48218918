"""The benchmark and regression scripts, run as a user runs them (subprocesses on the tiny checkpoint)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from testing.tts_bench import compare
from testing.tts_bench.checks import longest_repeat

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
def bench_run(tmp_path_factory) -> tuple[str, dict]:
    """(printed report, JSON) of one tiny run."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = _run_script("bench_tts.py", "--random-weights", "tiny", "--frames", "8", "--runs", "2",
                       "--streams", "1,2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "TTFP" in proc.stdout and "engine/package" in proc.stdout  # the printed table
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def bench(bench_run) -> dict:
    return bench_run[1]


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
    assert split["prefill"]["n"] == 2 and _positive(split["prefill"]["p50"])  # one per run
    base = bench["baseline"]
    for key in ("generate_total_ms", "generate_ms_per_frame", "generate_steady_ms_per_frame", "prefill_ms",
                "codec_default_ms_per_frame", "codec_whole_ms_per_frame", "codec_windowed_ms_per_frame",
                "codec_windowed_steady_ms_per_frame"):
        assert _positive(base[key]), key
    assert split["prompt_tokens"] == base["prompt_tokens"] > 1  # the same prompt is prefilled on both sides
    # the package's default decode, read from its own signature: one chunk for an 8-frame utterance
    assert base["codec_default_args"] == {"chunk_size": 300, "left_context_size": 25, "chunks": 1}
    assert all(_positive(v) for v in bench["ratios"].values()), bench["ratios"]


@pytest.mark.slow
def test_bench_compares_like_for_like_with_both_ratio_directions(bench_run):
    stdout, bench = bench_run
    split, base, frames = bench["frame_split_ms"], bench["baseline"], bench["config"]["frames"]
    by_key = {c["key"]: c for c in bench["comparisons"]}
    assert list(by_key) == ["generate", "generate_steady", "prefill", "codec_vs_default", "codec_vs_whole",
                            "codec_vs_windowed", "codec_vs_windowed_steady", "text_to_audio"]
    for key, c in by_key.items():
        assert _positive(c["engine_ms"]) and _positive(c["package_ms"]), key
        assert c["engine_over_package"] == pytest.approx(c["engine_ms"] / c["package_ms"])
        assert c["package_over_engine"] == pytest.approx(c["package_ms"] / c["engine_ms"])
        assert c["engine_includes"] and c["package_includes"], key
        assert bench["ratios"][key] == c["engine_over_package"]
        # printed: the row with both directions, and the sentence
        assert re.search(rf"{re.escape(c['title'])}\s.*\s{c['engine_over_package']:.3f}\s+"
                         rf"{c['package_over_engine']:.3f}", stdout), key
        assert f"package = {c['package_over_engine']:.3f}x the engine" in stdout
    # prefill in both: end to end = prefill + frames x steady, on each side
    steady, prefill = by_key["generate_steady"], by_key["prefill"]
    assert by_key["generate"]["engine_ms"] * frames == pytest.approx(
        prefill["engine_ms"] + frames * steady["engine_ms"], rel=1e-6)
    # (medians of 2 runs are means, so the package's parts add up exactly too)
    assert base["generate_total_ms"] == pytest.approx(base["prefill_ms"] + frames * steady["package_ms"], rel=1e-6)
    assert by_key["generate"]["package_ms"] * frames == pytest.approx(base["generate_total_ms"])
    assert split["prefill"]["p50"] == prefill["engine_ms"]
    assert "prefill" in by_key["generate"]["engine_includes"] and "prefill" in by_key["generate"]["package_includes"]
    assert "prefill" not in steady["engine_includes"] and "minus its prefill" in steady["package_includes"]
    assert "chunked_decode(chunk_size=300, left_context_size=25)" in by_key["codec_vs_default"]["package_includes"]
    assert by_key["text_to_audio"]["engine_ms"] == bench["streams"][0]["wall_ms"]["p50"]


@pytest.mark.slow
def test_bench_records_the_machine(bench_run):
    stdout, bench = bench_run
    machine = bench["config"]["machine"]
    assert machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    assert machine["cpu_count"] == os.cpu_count() and machine["cpus_usable"] >= 1
    assert machine["cpu_model"]
    flags = machine["cpu_flags"]
    assert {"avx512_bf16", "amx_bf16", "amx_tile", "avx2"} <= set(flags) and all(isinstance(v, bool) for v in flags.values())
    assert len(machine["load_avg_start"]) == len(machine["load_avg_end"]) == 3
    assert f"machine: {machine['cpu_model']}" in stdout and "load average" in stdout


def test_comparison_ratios_read_both_ways():
    split = {"talker": {"mean": 1.0}, "predictor": {"mean": 4.0}, "codec": {"mean": 6.0}, "prefill": {"p50": 10.0}}
    base = {"generate_ms_per_frame": 5.0, "generate_steady_ms_per_frame": 4.0, "prefill_ms": 4.0,
            "generate_total_ms": 20.0, "codec_default_ms_per_frame": 3.0, "codec_whole_ms_per_frame": 3.0,
            "codec_windowed_ms_per_frame": 12.0, "codec_windowed_steady_ms_per_frame": 24.0,
            "codec_default_args": {"chunk_size": 300, "left_context_size": 25, "chunks": 1}}
    streams = [{"streams": 2, "wall_ms": {"p50": 1.0}}, {"streams": 1, "wall_ms": {"p50": 64.0}}]
    by_key = {c["key"]: c for c in compare.comparisons(split, base, streams, frames=4)}
    gen = by_key["generate"]
    assert gen["engine_ms"] == (10.0 + 4 * 5.0) / 4 and gen["engine_over_package"] == 1.5  # prefill spread over 4
    assert by_key["generate_steady"]["engine_over_package"] == 1.25
    codec = by_key["codec_vs_default"]
    assert codec["engine_over_package"] == 2.0 and codec["package_over_engine"] == 0.5
    assert "1 chunk(s)" in codec["package_includes"]
    assert by_key["codec_vs_windowed_steady"]["engine_over_package"] == 0.25
    assert by_key["text_to_audio"]["engine_ms"] == 64.0 and by_key["text_to_audio"]["package_ms"] == 20.0 + 3.0 * 4
    assert compare.sentence(codec) == ("codec vs the package's default decode: engine 6.00 ms/frame = 2.000x the "
                                       "package's 3.00 ms/frame; package = 0.500x the engine")
    # no baseline (--no-baseline): every comparison is there, unmeasured, and says so
    empty = compare.comparisons(split, {}, [], frames=4)
    assert all(c["engine_over_package"] is None and c["package_over_engine"] is None for c in empty)
    assert compare.sentence(empty[0]).endswith("not measured")


@pytest.mark.slow
def test_decoder_check_prints_the_streamed_vs_whole_figure(tmp_path):
    out = tmp_path / "decoder.json"
    proc = _run_script("check_codec_decoder.py", "--sizes", "tiny", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    (case,) = json.loads(out.read_text())["cases"]
    assert case["decoder"] == "tiny" and case["frames"] == 100
    assert 0 < case["max_abs_diff"] <= case["tests_assert_max_abs_diff"]
    assert case["first_frame_max_abs_diff"] <= case["max_abs_diff"] and case["past_window_max_abs_diff"] is not None
    # the tolerance it prints is the one tests/test_codec_decoder.py asserts
    tol = re.search(r"^TOL = (\S+)$", (ROOT / "tests" / "test_codec_decoder.py").read_text(), re.M)
    assert tol and float(tol.group(1)) == case["tests_assert_max_abs_diff"]
    assert f"tiny decoder, 100 frames: max |diff| {case['max_abs_diff']:.1e}" in proc.stdout
    assert "tests assert <= 1e-04: within" in proc.stdout


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
    rng = np.random.default_rng(0)
    fresh = rng.permutation(2048)[:100]
    assert longest_repeat(fresh)[0] == 1
    loop = np.concatenate([fresh[:10], np.tile(fresh[50:59], 5), fresh[10:30]])  # a 9-frame n-gram, 5 times
    assert longest_repeat(loop)[:2] == (5, 9)
    assert longest_repeat(np.tile(fresh[:3], 30))[0] >= 4  # a short cycle repeats as longer n-grams too
