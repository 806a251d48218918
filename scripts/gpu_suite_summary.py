#!/usr/bin/env python3
"""The last lines of scripts/gpu_suite.sh: one compact table from the JSON its steps wrote.

    python scripts/gpu_suite_summary.py OUT_DIR

Standard library only, so it prints even when the steps' own imports failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHES = ("bench_0b6.json", "bench_1b7.json")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def gpu_check_lines(report: dict | None) -> list[str]:
    if report is None:
        return ["gpu_check: no JSON (the step failed before writing it)"]
    env = report["environment"]
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in ("PASS", "FAIL", "SKIP")}
    failed = [f"{c['number']}. {c['name']}" for c in report["checks"] if c["status"] == "FAIL"]
    return [f"gpu_check: {report['model']} {report['dtype']} max_context {report['max_context']} on {env['gpu']} "
            f"(driver {env['driver']}, torch {env['torch']}, CUDA {env['cuda']}): "
            f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP"
            + (f"; FAILED: {', '.join(failed)}" if failed else "")]


def bench_lines(name: str, report: dict | None) -> list[str]:
    if report is None:
        return [f"bench {name}: no JSON (the step failed or timed out)"]
    split, ratios = report["frame_split_ms"], report["ratios"]
    peak = report.get("peak_gpu_mem_bytes")
    lines = [f"bench {name} ({report['config']['dtype']}, {report['config']['frames']} frames): eager frame "
             f"talker/predictor/codec {_f(split['talker']['mean'], 2)}/{_f(split['predictor']['mean'], 2)}/"
             f"{_f(split['codec']['mean'], 2)} ms, engine/package generate (prefill in both) {_f(ratios['generate'], 3)}, "
             f"steady (prefill in neither) {_f(ratios.get('generate_steady'), 3)}, codec/default decode "
             f"{_f(ratios.get('codec_vs_default'), 3)}, "
             f"peak {'-' if peak is None else round(peak / 2**20)} MiB"]
    for s in report["streams"]:
        lines.append(f"  {s['streams']:>3} streams: first packet p50 {_f(s['ttfp_ms']['p50'])} ms "
                     f"p95 {_f(s['ttfp_ms']['p95'])} ms, RTF throughput {_f(s['rtf_throughput'], 3)}, "
                     f"underruns {s['underruns']}/{s['packets']}")
    return lines


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(".")
    lines = gpu_check_lines(_load(out / "gpu_check.json"))
    for file in BENCHES:
        report = _load(out / file)
        lines += bench_lines(report["model"]["name"] if report else file, report)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
