"""The soak test's measurements and verdict: memory of every service started by start_all.sh (from
its pid files), the completeness of each turn's trace record, latency percentiles (through
agent/observe/trace_stats.py, the same numbers scripts/trace_report.py prints) and the summary text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from agent.launch import read_chosen
from agent.observe.trace_stats import STAGES, LoadedTraces, TraceLine, stage_stats, summarize

# Every turn record must carry these (traces/README.md); the durations must be >= 0 or null.
REQUIRED_KEYS = ("session_id", "turn_id", "ts", "user_text", "agent_text", *STAGES[:6], "interrupted",
                 "cancel_to_silence_ms", "error")
# A turn that was answered must have measured every stage of the answer.
ANSWER_STAGES = ("vad_to_stt_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "voice_to_voice_ms")


def fill_endpoints(args: Any) -> None:
    """--base and --metrics-url, where not given: what start_all.sh recorded in --run-dir, else the
    token server on $TOKEN_SERVER_PORT (8080)."""
    chosen = read_chosen(Path(args.run_dir) / "chosen.env")
    args.base = (args.base or chosen.get("PAGE_URL")
                 or f"http://127.0.0.1:{os.environ.get('TOKEN_SERVER_PORT', '8080')}")
    args.metrics_url = args.metrics_url or chosen.get("AGENT_METRICS_URL")


def write_report(report: dict[str, Any], json_path: str, png_path: str | None,
                 draw: Callable[[Path], None]) -> str:
    """The JSON report, and its plot drawn by `draw` (default: next to the JSON, .png); says where."""
    out = Path(json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    png = Path(png_path) if png_path else out.with_suffix(".png")
    draw(png)
    return f"report: {out}  plot: {png}"


# ---- memory -------------------------------------------------------------------------------------

def service_pids(run_dir: Path) -> dict[str, int]:
    pids = {}
    for pid_file in sorted((run_dir / "pids").glob("*.pid")):
        try:
            pids[pid_file.stem] = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _gpu_memory_mb() -> dict[int, float]:
    """pid -> MiB of GPU memory, from nvidia-smi (empty without a GPU)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    usage: dict[int, float] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                usage[int(parts[0])] = usage.get(int(parts[0]), 0.0) + float(parts[1])
            except ValueError:
                continue
    return usage


def sample_memory(pids: dict[str, int]) -> dict[str, dict[str, Any]]:
    """RSS (and GPU memory) of each service's whole process tree: a service started through a shell
    script or a launcher lives in its children."""
    gpu = _gpu_memory_mb()
    out: dict[str, dict[str, Any]] = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            out[name] = {"pid": pid, "alive": False, "rss_mb": None, "gpu_mb": None}
            continue
        rss = 0
        for proc in tree:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        gpu_mb = sum(gpu.get(p.pid, 0.0) for p in tree) if gpu else None
        out[name] = {"pid": pid, "alive": True, "rss_mb": round(rss / 2**20, 1), "gpu_mb": gpu_mb}
    return out


def memory_growth(start: dict[str, dict[str, Any]], end: dict[str, dict[str, Any]],
                  max_growth_mb: float) -> tuple[dict[str, Any], list[str]]:
    growth, failures = {}, []
    for name in sorted(set(start) | set(end)):
        a, b = start.get(name, {}), end.get(name, {})
        entry: dict[str, Any] = {"start": a, "end": b}
        for key in ("rss_mb", "gpu_mb"):
            if a.get(key) is not None and b.get(key) is not None:
                entry[key.replace("_mb", "_growth_mb")] = round(b[key] - a[key], 1)
        growth[name] = entry
        if a.get("alive") and not b.get("alive"):
            failures.append(f"service {name} (pid {a.get('pid')}) died during the soak")
        for key in ("rss_growth_mb", "gpu_growth_mb"):
            if entry.get(key, 0.0) > max_growth_mb:
                failures.append(f"service {name}: {key} {entry[key]} MB > {max_growth_mb} MB allowed (--max-growth-mb)")
    return growth, failures


# ---- traces -------------------------------------------------------------------------------------

def trace_problems(rec: dict[str, Any], session_id: str | None) -> list[str]:
    """Why one turn record is incomplete (empty list: complete)."""
    where = f"turn {rec.get('turn_id')}"
    problems = [f"{where}: missing key {k}" for k in REQUIRED_KEYS if k not in rec]
    if session_id is not None and rec.get("session_id") != session_id:
        problems.append(f"{where}: session_id {rec.get('session_id')!r} is not this call's {session_id!r}")
    for key in STAGES:
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v < 0):
            problems.append(f"{where}: {key} = {v!r} is not a non-negative number")
    if rec.get("error") is None:
        # a reply cut before its first frame reached the transport, or replaced by a reply to the
        # user's further words before it played (superseded), was never heard: it has no
        # voice-to-voice figure to give (and, cut before its first audio, no TTS one), only the
        # stages up to the cut
        cut_unheard = rec.get("interrupted") and "published" not in (rec.get("clock") or {})
        required = ANSWER_STAGES[:2] if rec.get("superseded") or cut_unheard else ANSWER_STAGES
        problems += [f"{where}: {k} is null in an answered turn" for k in required if rec.get(k) is None]
        if rec.get("interrupted") and rec.get("cancel_to_silence_ms") is None:
            problems.append(f"{where}: interrupted but cancel_to_silence_ms is null")
    return problems


def latency_summary(records: list[dict[str, Any]], client_v2v_ms: list[float],
                    client_barge_in_ms: list[float] | None = None) -> dict[str, Any]:
    """Per-stage n/p50/p95/max from trace_stats, plus what the client itself measured."""
    loaded = LoadedTraces(files=["agent-events"], lines=[TraceLine(f"agent-events:{i}", r)
                                                         for i, r in enumerate(records, start=1)])
    summary = summarize(loaded)
    stages = dict(summary["stages"])
    # end of our speech -> first agent audio at our end: includes both jitter buffers and the wire
    stages["client_voice_to_voice_ms"] = stage_stats(client_v2v_ms)
    # our speech onset -> the last frame of the cut reply to arrive here: the stop latency we hear
    stages["client_barge_in_to_silence_ms"] = stage_stats(client_barge_in_ms or [])
    return {"stages": stages, "interrupted": summary["interrupted"], "failed": summary["failed"],
            "barge_in_outcomes": summary["barge_in_outcomes"], "negative_durations": summary["negative_durations"]}


# ---- summary ------------------------------------------------------------------------------------

def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_summary(report: dict[str, Any]) -> str:
    r = report
    lines = [f"Soak: {r['turns_completed']}/{r['turns_requested']} turns completed, {r['errors']} errors, "
             f"traces complete: {r['traces_complete']}, barge-ins attempted {r['barge_ins']['attempted']} "
             f"(interrupted turns {r['barge_ins']['interrupted_turns']}), "
             f"leaks: {'none' if not r['leaks']['problems'] else 'YES'}",
             f"  ({r['mode']} mode, {r.get('sessions_requested', 1)} concurrent session(s)"
             f"{', TEST VOICE' if r.get('test_voice') else ''}, {r['duration_s']:.0f} s)",
             f"  {'stage (ms)':<28}{'n':>5}{'p50':>10}{'p95':>10}{'max':>10}"]
    for key, s in r["latency"]["stages"].items():
        lines.append(f"  {key:<28}{s['n']:>5}{_num(s['p50']):>10}{_num(s['p95']):>10}{_num(s['max']):>10}")
    lines.append(f"  {'memory (MB)':<28}{'start':>10}{'end':>10}{'growth':>10}")
    for name, m in r["memory"].items():
        lines.append(f"  {name + ' rss':<28}{_num(m['start'].get('rss_mb')):>10}{_num(m['end'].get('rss_mb')):>10}"
                     f"{_num(m.get('rss_growth_mb')):>10}")
        if m.get("gpu_growth_mb") is not None:
            lines.append(f"  {name + ' gpu':<28}{_num(m['start'].get('gpu_mb')):>10}"
                         f"{_num(m['end'].get('gpu_mb')):>10}{_num(m['gpu_growth_mb']):>10}")
    if not r["memory"]:
        lines.append("  (no pid files found: memory not sampled; run the system with scripts/start_all.sh)")
    lines.append("RESULT: PASS" if not r["failures"] else
                 "RESULT: FAIL\n" + "\n".join(f"  - {f}" for f in r["failures"]))
    return "\n".join(lines) + "\n"
