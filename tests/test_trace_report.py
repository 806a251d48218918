"""scripts/trace_report.py on a recorded trace: table values computed by hand, JSON, damage, PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from agent.observe.trace_stats import error_stage, percentile, split_errors

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "trace_report.py"


def turn(session: str, turn_id: int, vad_to_stt: float, stt: float, ttft: float | None = None,
         ttfa: float | None = None, publish: float | None = None, v2v: float | None = None,
         **extra: Any) -> dict[str, Any]:
    """A record shaped like agent/observe/traces.py writes it (overhead = v2v minus the three models)."""
    overhead = None if v2v is None or ttft is None or ttfa is None else round(v2v - stt - ttft - ttfa, 2)
    ts = 1795328900.0 + 10 * turn_id + (50 if session == "b" else 0)
    rec = {"session_id": session, "turn_id": turn_id, "ts": ts,
           "user_text": "hello there", "agent_text": "Sure.", "vad_to_stt_ms": vad_to_stt, "stt_ms": stt,
           "llm_ttft_ms": ttft, "tts_ttfa_ms": ttfa, "tts_first_to_publish_ms": publish,
           "voice_to_voice_ms": v2v,
           "interrupted": False, "cancel_to_silence_ms": None, "error": None, "opened_by": "end_of_speech",
           "barge_in_outcome": None, "stt_to_llm_ms": 3.0, "llm_to_tts_ms": 2.0, "llm_total_ms": 300.0,
           "pipeline_overhead_ms": overhead, "closed_by": "done"}
    rec.update(extra)
    return rec


SESSION_A = [
    turn("a", 1, 180, 150, 120, 90, 5, 400),
    turn("a", 2, 200, 160, 150, 110, -1.5, 500),  # a bookkeeping bug: must be flagged, not averaged
    turn("a", 3, 210, 170, 200, 130, 6, 600, barge_in_outcome="false_resumed"),
    turn("a", 4, 190, 150, error="llm: timeout", closed_by="error"),
]
SESSION_B = [
    turn("b", 1, 140, 110, 80, 60, 4, 300),
    turn("b", 2, 260, 220, 190, 150, 5, 700, interrupted=True, cancel_to_silence_ms=42.0,
         barge_in_outcome="cut", barge_in_paused_by="vad", closed_by="barge_in"),
    turn("b", 3, 400, 350, 300, 200, 8, 1000, opened_by="barge_in"),
    turn("b", 4, 150, 120, error="llm: timeout; tts: engine busy", closed_by="error"),
]
TRUNCATED = '{"session_id": "b", "turn_id": 5, "ts": 17953'  # a write cut short by a crash


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    d = tmp_path / "traces"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SESSION_A))
    lines = [json.dumps(r) for r in SESSION_B]
    (d / "b.jsonl").write_text("\n".join(lines + [TRUNCATED]) + "\n")
    return d


def report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def section(table: str, header_start: str) -> dict[str, list[str]]:
    """The stage rows of one block of the table: {stage: [n, p50, p95, max]}."""
    block = next(b for b in table.split("\n\n") if b.startswith(header_start))
    return {cols[0]: cols[1:] for cols in (line.split() for line in block.splitlines()[2:])}


def test_table_has_hand_computed_percentiles_and_counts(traces: Path) -> None:
    out = report(traces / "a.jsonl", traces / "b.jsonl")
    assert out.returncode == 0, out.stderr
    table = out.stdout
    assert table.startswith("Trace report: 8 turns in 2 sessions from 2 files\n")
    assert "turns 8   interrupted 1 (12.5%)   failed 2 (25.0%)   malformed lines 1" in table
    assert "barge-in outcomes: cut 1, false_resumed 1" in table
    assert "reply first silenced by: vad 1" in table
    every = section(table, "All sessions")
    # voice_to_voice: 300 400 500 600 700 1000 -> p50 at rank 2.5 = 550, p95 at rank 4.75 = 700 + .75 * 300
    assert every["voice_to_voice_ms"] == ["6", "550.0", "925.0", "1000.0"]
    # stt: 110 120 150 150 160 170 220 350 -> p50 at rank 3.5 = 155, p95 at rank 6.65 = 220 + .65 * 130
    assert every["stt_ms"] == ["8", "155.0", "304.5", "350.0"]
    assert every["tts_first_to_publish_ms"][0] == "5"  # the -1.5 is left out
    assert every["cancel_to_silence_ms"] == ["1", "42.0", "42.0", "42.0"]
    assert every["pipeline_overhead_ms"] == ["6", "90.0", "147.5", "150.0"]
    sess_a = section(table, "Session a: 4 turns, 0 interrupted, 1 failed")
    assert sess_a["voice_to_voice_ms"] == ["3", "500.0", "590.0", "600.0"]
    assert sess_a["cancel_to_silence_ms"] == ["0", "-", "-", "-"]
    sess_b = section(table, "Session b: 4 turns, 1 interrupted, 1 failed")
    assert sess_b["voice_to_voice_ms"] == ["3", "700.0", "970.0", "1000.0"]
    assert "Errors by stage: stt 0, llm 2, tts 1, other 0" in table
    assert "      2  llm: timeout\n      1  tts: engine busy\n" in table
    assert "DATA PROBLEM: 1 negative duration (excluded from the stats)" in table
    assert f"{traces / 'a.jsonl'}:2: session a turn 2 tts_first_to_publish_ms = -1.5" in table
    assert "Malformed lines (skipped): 1" in table
    assert f"{traces / 'b.jsonl'}:5: not JSON" in table


def test_json_summary(traces: Path, tmp_path: Path) -> None:
    out = report(traces, "--json", tmp_path / "r.json")  # a directory: every *.jsonl in it
    assert out.returncode == 0, out.stderr
    s = json.loads((tmp_path / "r.json").read_text())
    assert (s["turns"], s["sessions"], s["interrupted"], s["failed"]) == (8, 2, 1, 2)
    assert s["stages"]["voice_to_voice_ms"] == {"n": 6, "p50": 550.0, "p95": 925.0, "max": 1000.0}
    assert s["per_session"]["b"]["stages"]["stt_ms"] == {"n": 4, "p50": 170.0, "p95": 330.5, "max": 350.0}
    assert s["per_session"]["a"]["failed"] == 1
    assert s["errors"] == {"by_stage": {"stt": 0, "llm": 2, "tts": 1, "other": 0},
                           "top": [["llm: timeout", 2], ["tts: engine busy", 1]]}
    assert s["barge_in_outcomes"] == {"cut": 1, "false_resumed": 1}
    assert s["barge_in_paused_by"] == {"vad": 1}
    assert s["negative_durations"] == [{"where": f"{traces / 'a.jsonl'}:2", "session_id": "a", "turn_id": 2,
                                        "stage": "tts_first_to_publish_ms", "value": -1.5}]
    [bad] = s["malformed_lines"]
    assert bad["where"] == f"{traces / 'b.jsonl'}:5" and bad["reason"].startswith("not JSON")


def test_damage_never_crashes_and_strict_fails(tmp_path: Path) -> None:
    f = tmp_path / "odd.jsonl"
    f.write_text('[1, 2]\n\n{"turn_id": 1}\n{"session_id": "x", "stt_ms": "fast"}\n'
                 + json.dumps(turn("x", 1, 10, 8, 5, 20, 1, 40)) + "\n\x00\xff garbage\n")
    out = report(f, tmp_path / "missing.jsonl")
    assert out.returncode == 0, out.stderr
    assert "turns 1 " in out.stdout and "malformed lines 5" in out.stdout
    assert f"{f}:1: not a JSON object (list)" in out.stdout
    assert f"{f}:3: no session_id" in out.stdout
    assert f"{f}:4: stt_ms is not a number: 'fast'" in out.stdout
    assert f"{tmp_path / 'missing.jsonl'}:0: unreadable" in out.stdout
    assert report(f, "--strict").returncode == 1
    (tmp_path / "empty").mkdir()
    nothing = report(tmp_path / "empty")
    assert nothing.returncode == 2 and "no trace files" in nothing.stderr


def test_png_is_a_valid_image_with_the_stack_colours(traces: Path, tmp_path: Path) -> None:
    png = tmp_path / "r.png"
    assert report(traces, "--png", png).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.round(imread(png)[..., :3] * 255).astype(np.uint8)  # [H, W, RGB]
    assert pixels.shape == (780, 1200, 3)
    colours = {tuple(p) for p in np.unique(pixels.reshape(-1, 3), axis=0).tolist()}
    stt, llm, tts, other = (66, 133, 244), (52, 168, 83), (251, 140, 0), (170, 170, 170)
    interrupted, failed = (142, 68, 173), (219, 55, 55)
    assert {stt, llm, tts, other, interrupted, failed} <= colours


def test_percentile_and_error_helpers() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert split_errors("llm: timeout; tts: a; b") == ["llm: timeout", "tts: a; b"]
    assert [error_stage(m) for m in ("stt: x", "TTS: y", "boom", "vad: z")] == ["stt", "tts", "other", "other"]
