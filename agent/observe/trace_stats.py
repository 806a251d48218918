"""Pure computations over per-turn JSONL traces (schema: traces/README.md).

Shared by `scripts/trace_report.py`, the soak and the benchmarks: load trace files (tolerating damage),
summarize them into per-stage percentiles overall and per session, and format the summary as a
fixed-width table. No I/O besides reading the trace files; no torch, no engine.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The stages a report covers, in pipeline order. All are milliseconds, >= 0 or null.
# The *_queue_ms stages are the time a request waited for a busy server before it was served (null
# when the server does not say: only the CPU stand-ins' router does).
STAGES: tuple[str, ...] = ("vad_to_stt_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "tts_first_to_publish_ms",
                           "voice_to_voice_ms", "pipeline_overhead_ms", "cancel_to_silence_ms",
                           "stt_queue_ms", "llm_queue_ms", "endpointing_ms", "onset_to_silence_ms",
                           "barge_in_detect_ms")
ERROR_STAGES: tuple[str, ...] = ("stt", "llm", "tts", "other")
TOP_ERRORS = 5
# A turn's error field joins several failures with "; " (agent/observe/traces.py); split only where the
# next part starts with a stage prefix so a message that itself contains "; " stays whole.
_ERROR_SPLIT = re.compile(r"; (?=[a-z_]+: )")


@dataclass(frozen=True)
class TraceLine:
    where: str  # "file:line", for pointing a person at the data
    record: dict[str, Any]


@dataclass
class LoadedTraces:
    files: list[str] = field(default_factory=list)
    lines: list[TraceLine] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (file:line, why)


def trace_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and every *.jsonl inside a given directory (sorted, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    return out


def _problem(rec: Any) -> str | None:
    """Why a parsed line is not a usable turn record, or None."""
    if not isinstance(rec, dict):
        return f"not a JSON object ({type(rec).__name__})"
    if not isinstance(rec.get("session_id"), str):
        return "no session_id"
    for key in STAGES:
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            return f"{key} is not a number: {v!r}"
    return None


def load_traces(paths: Iterable[str | Path]) -> LoadedTraces:
    """Read every line of every file; a damaged line (a write cut short by a crash, a stray edit)
    is counted and named, never fatal. An unreadable file is one malformed entry at line 0."""
    out = LoadedTraces()
    for path in trace_files(paths):
        out.files.append(str(path))
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            out.malformed.append((f"{path}:0", f"unreadable: {e.strerror or e}"))
            continue
        for no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                rec = json.loads(line)
            except ValueError as e:
                out.malformed.append((where, f"not JSON ({e})"))
                continue
            why = _problem(rec)
            if why is not None:
                out.malformed.append((where, why))
            else:
                out.lines.append(TraceLine(where, rec))
    log.debug("loaded %d turns, %d malformed lines", len(out.lines), len(out.malformed))
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The project's one percentile (traces, soak, benchmarks): linear interpolation between the
    closest ranks, numpy's default - p50 of [1, 2, 3, 4] is 2.5, p95 of 20 values lies between the
    19th and the 20th. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q / 100 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def stage_stats(values: Sequence[float]) -> dict[str, Any]:
    """n / p50 / p95 / max, rounded to 0.01 (ms in every report)."""
    return {"n": len(values), "p50": _round(percentile(values, 50)), "p95": _round(percentile(values, 95)),
            "max": _round(max(values)) if values else None}


def error_stage(message: str) -> str:
    """"stt: timeout" -> "stt"; anything without a known stage prefix -> "other"."""
    prefix = message.split(":", 1)[0].strip().lower()
    return prefix if prefix in ERROR_STAGES else "other"


def split_errors(error: str) -> list[str]:
    return [part.strip() for part in _ERROR_SPLIT.split(error) if part.strip()]


def _counts(lines: Sequence[TraceLine]) -> dict[str, Any]:
    recs = [tl.record for tl in lines]
    return {"turns": len(recs), "interrupted": sum(1 for r in recs if r.get("interrupted") is True),
            "failed": sum(1 for r in recs if r.get("error") is not None)}


def _stages(lines: Sequence[TraceLine]) -> dict[str, dict[str, Any]]:
    # Negative durations are reported as data problems and kept out of the stats: they are a
    # clock or bookkeeping bug, not a latency, and would silently pull the percentiles down.
    return {key: stage_stats([float(v) for tl in lines if (v := tl.record.get(key)) is not None and v >= 0])
            for key in STAGES}


def summarize(loaded: LoadedTraces) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-able data."""
    lines = loaded.lines
    sessions: dict[str, list[TraceLine]] = {}
    for tl in lines:
        sessions.setdefault(tl.record["session_id"], []).append(tl)
    messages: Counter[str] = Counter()
    by_stage: Counter[str] = Counter({s: 0 for s in ERROR_STAGES})
    for tl in lines:
        err = tl.record.get("error")
        if err is not None:
            for part in split_errors(str(err)):
                messages[part] += 1
                by_stage[error_stage(part)] += 1
    negative = [{"where": tl.where, "session_id": tl.record["session_id"], "turn_id": tl.record.get("turn_id"),
                 "stage": key, "value": tl.record[key]}
                for tl in lines for key in STAGES if (tl.record.get(key) or 0) < 0]
    outcomes = Counter(str(o) for tl in lines if (o := tl.record.get("barge_in_outcome")) is not None)
    paused_by = Counter(str(p) for tl in lines if (p := tl.record.get("barge_in_paused_by")) is not None)
    return {
        "files": loaded.files, "sessions": len(sessions), **_counts(lines),
        "barge_in_outcomes": dict(sorted(outcomes.items())),
        "barge_in_paused_by": dict(sorted(paused_by.items())),
        "errors": {"by_stage": dict(by_stage), "top": [[m, c] for m, c in messages.most_common(TOP_ERRORS)]},
        "stages": _stages(lines),
        "per_session": {sid: {**_counts(tls), "stages": _stages(tls)} for sid, tls in sorted(sessions.items())},
        "negative_durations": negative,
        "malformed_lines": [{"where": w, "reason": r} for w, r in loaded.malformed],
    }


# ---- fixed-width table ------------------------------------------------------------------------

LIST_LIMIT = 20  # malformed lines / data problems named one by one before "... and N more"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _stage_table(stages: dict[str, dict[str, Any]], indent: str = "  ") -> list[str]:
    rows = [f"{indent}{'stage (ms)':<26}{'n':>6}{'p50':>10}{'p95':>10}{'max':>10}"]
    for key in STAGES:
        s = stages[key]
        rows.append(f"{indent}{key:<26}{s['n']:>6}{_num(s['p50']):>10}{_num(s['p95']):>10}{_num(s['max']):>10}")
    return rows


def _listing(title: str, items: list[str]) -> list[str]:
    rows = [title] + [f"  {item}" for item in items[:LIST_LIMIT]]
    if len(items) > LIST_LIMIT:
        rows.append(f"  ... and {len(items) - LIST_LIMIT} more")
    return rows


def format_table(summary: dict[str, Any]) -> str:
    s = summary
    out = [f"Trace report: {_plural(s['turns'], 'turn')} in {_plural(s['sessions'], 'session')} "
           f"from {_plural(len(s['files']), 'file')}",
           f"turns {s['turns']}   interrupted {_pct(s['interrupted'], s['turns'])}   "
           f"failed {_pct(s['failed'], s['turns'])}   malformed lines {len(s['malformed_lines'])}"]
    if s["barge_in_outcomes"]:
        out.append("barge-in outcomes: " + ", ".join(f"{k} {v}" for k, v in s["barge_in_outcomes"].items()))
    if s["barge_in_paused_by"]:
        out.append("reply first silenced by: " + ", ".join(f"{k} {v}" for k, v in s["barge_in_paused_by"].items()))
    out += ["", "All sessions", *_stage_table(s["stages"])]
    sessions = s["per_session"] if s["sessions"] > 1 else {}  # a single session's table is the one above
    for sid, sess in sessions.items():
        out += ["", f"Session {sid}: {sess['turns']} turns, {sess['interrupted']} interrupted, "
                    f"{sess['failed']} failed", *_stage_table(sess["stages"])]
    if s["failed"]:
        by_stage = ", ".join(f"{k} {v}" for k, v in s["errors"]["by_stage"].items())
        out += ["", f"Errors by stage: {by_stage}", "Most common errors:"]
        out += [f"  {c:>5}  {m}" for m, c in s["errors"]["top"]]
    if s["negative_durations"]:
        out += ["", *_listing(f"DATA PROBLEM: {_plural(len(s['negative_durations']), 'negative duration')} "
                              "(excluded from the stats)",
                              [f"{d['where']}: session {d['session_id']} turn {d['turn_id']} "
                               f"{d['stage']} = {d['value']}" for d in s["negative_durations"]])]
    if s["malformed_lines"]:
        out += ["", *_listing(f"Malformed lines (skipped): {len(s['malformed_lines'])}",
                              [f"{m['where']}: {m['reason']}" for m in s["malformed_lines"]])]
    return "\n".join(out) + "\n"
