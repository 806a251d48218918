"""scripts/bench_pipeline.py runs end to end and reports what the issue asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_pipeline_reports_overhead_and_cancel_to_silence(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "scripts/bench_pipeline.py", "--turns", "2", "--json", str(out),
                          "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["errors"] == 0
    assert report["turns"] == 3 and report["interrupted_turns"] == 1  # 2 utterances + the interruption
    for key in ["overhead_ms_p50", "overhead_ms_p95", "cancel_to_silence_ms_p50", "cancel_to_silence_ms_p95"]:
        assert report[key] is not None and report[key] >= 0, key
    lines = [json.loads(line) for line in open(report["traces"])]
    assert len(lines) == report["turns"]
