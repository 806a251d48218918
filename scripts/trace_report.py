#!/usr/bin/env python3
"""Trace report: what a person reads after a soak test or a day in production.

    python scripts/trace_report.py traces/*.jsonl [--json report.json] [--png report.png] [--strict]

Reads per-turn JSONL traces (files, or directories holding *.jsonl) and prints a fixed-width
table: n / p50 / p95 / max per stage (ms) over all sessions and per session, counts of turns,
interrupted turns and failed turns (error not null) with the most common error messages. Damaged
lines are skipped, counted and named as file:line; a negative duration is flagged as a data
problem and kept out of the stats. Percentiles interpolate linearly between the closest ranks
(agent/observe/trace_stats.py's `percentile`, the one every report here uses).

The PNG (--png, matplotlib: testing/plots.py) has three panels:
  top:          one stacked bar per turn in time order (ts): STT (blue), LLM time to first token
                (green), TTS time to first audio (orange) and the rest = voice-to-voice minus those
                three (grey: endpointing, word hold-back, publishing). The bar's height is the
                turn's voice-to-voice latency; a turn without one stacks only the stages it has.
                Marks under it: purple = interrupted, red = failed. Beyond 550 turns, consecutive
                turns are averaged into one bar (the title says how many per bar).
  bottom left:  histogram of voice_to_voice_ms (20 bins, x in ms, y = turns).
  bottom right: histogram of cancel_to_silence_ms (barge-in -> silence) of interrupted turns.

Exit status: 0, or 1 with --strict when there were malformed lines or negative durations,
2 when no trace file was found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.observe.trace_stats import format_table, load_traces, summarize, trace_files
from testing.plots import trace_plot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", nargs="+", help="JSONL trace files or directories of them")
    ap.add_argument("--json", metavar="OUT",
                    help="write the summary as JSON ('-': to stdout, instead of the table)")
    ap.add_argument("--png", metavar="OUT", help="draw the plot described above")
    ap.add_argument("--strict", action="store_true", help="exit 1 on malformed lines or negative durations")
    args = ap.parse_args(argv)
    if not trace_files(args.traces):
        print("no trace files found in: " + " ".join(args.traces), file=sys.stderr)
        return 2
    loaded = load_traces(args.traces)
    summary = summarize(loaded)
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary), end="")
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.png:
        trace_plot([tl.record for tl in loaded.lines], Path(args.png))
        print(f"plot written to {args.png}", file=sys.stderr)
    problems = summary["malformed_lines"] or summary["negative_durations"]
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
