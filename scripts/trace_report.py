#!/usr/bin/env python3
"""Trace report: what a person reads after a soak test or a day in production.

    python scripts/trace_report.py traces/*.jsonl [--json report.json] [--png report.png] [--strict]

Reads per-turn JSONL traces (files, or directories holding *.jsonl) and prints a fixed-width
table: n / p50 / p95 / max per stage (ms) over all sessions and per session, counts of turns,
interrupted turns and failed turns (error not null) with the most common error messages. Damaged
lines are skipped, counted and named as file:line; a negative duration is flagged as a data
problem and kept out of the stats. Percentiles interpolate linearly between closest ranks.

The PNG (--png) has three panels, drawn with numpy + zlib (no plotting library):
  top:          one stacked bar per turn in time order (ts): STT (blue), LLM time to first token
                (green), TTS time to first audio (orange) and OTHER = voice-to-voice minus those
                three (grey: endpointing, word hold-back, publishing). The bar's height is the
                turn's voice-to-voice latency; a turn without one stacks only the stages it has.
                Marks under the axis: purple = interrupted, red = failed. Beyond ~550 turns,
                consecutive turns are averaged into one bar (the title says how many per bar).
  bottom left:  histogram of voice_to_voice_ms (20 bins, x in ms, y = turns).
  bottom right: histogram of cancel_to_silence_ms (barge-in -> silence) of interrupted turns.
Labels use a built-in 3x5 pixel font (upper case, digits).

Exit status: 0, or 1 with --strict when there were malformed lines or negative durations,
2 when no trace file was found.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.trace_stats import format_table, load_traces, summarize, trace_files  # noqa: E402

Color = tuple[int, int, int]
BLACK, GREY, LIGHT = (0, 0, 0), (110, 110, 110), (225, 225, 225)
STACK: list[tuple[str, str | None, Color]] = [  # (legend, trace key, color); None = the remainder
    ("STT", "stt_ms", (66, 133, 244)), ("LLM TTFT", "llm_ttft_ms", (52, 168, 83)),
    ("TTS TTFA", "tts_ttfa_ms", (251, 140, 0)), ("OTHER", None, (170, 170, 170))]
INTERRUPTED, FAILED = (142, 68, 173), (219, 55, 55)

# 3x5 font: 15 bits per glyph, rows top to bottom.
_FONT_SRC = """0 111101101101111 1 010110010010111 2 111001111100111 3 111001111001111 4 101101111001001
5 111100111001111 6 111100111101111 7 111001001001001 8 111101111101111 9 111101111001111
A 010101111101101 B 110101110101110 C 011100100100011 D 110101101101110 E 111100110100111
F 111100110100100 G 011100101101011 H 101101111101101 I 111010010010111 J 001001001101010
K 101101110101101 L 100100100100111 M 101111111101101 N 110101101101101 O 010101101101010
P 110101110100100 Q 010101101110011 R 110101110101101 S 011100010001110 T 111010010010010
U 101101101101111 V 101101101101010 W 101101111111101 X 101101010101101 Y 101101010010010
Z 111001010100111 . 000000000000010 - 000000111000000 / 001001010100100 : 000010000010000
% 101001010100101 ( 010100100100010 ) 010001001001010 = 000111000111000 _ 000000000000111
, 000000000010100 + 000010111010000"""
_tokens = _FONT_SRC.split()
FONT = {c: np.array([b == "1" for b in bits], bool).reshape(5, 3)
        for c, bits in zip(_tokens[::2], _tokens[1::2], strict=True)}


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.px = np.full((height, width, 3), 255, np.uint8)  # [H, W, RGB]

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        h, w = self.px.shape[:2]
        xa, xb = sorted((max(0, min(w, round(x0))), max(0, min(w, round(x1)))))
        ya, yb = sorted((max(0, min(h, round(y0))), max(0, min(h, round(y1)))))
        self.px[ya:yb, xa:xb] = color

    def text(self, x: float, y: float, s: str, color: Color = BLACK, scale: int = 2,
             right: bool = False) -> None:
        if right:
            x -= text_width(s, scale)
        for i, ch in enumerate(s.upper()):
            glyph = FONT.get(ch)
            if glyph is None:
                continue  # spaces and characters the font lacks
            for r, c in zip(*np.nonzero(glyph), strict=True):
                gx, gy = x + (i * 4 + c) * scale, y + r * scale
                self.rect(gx, gy, gx + scale, gy + scale, color)

    def png(self) -> bytes:
        h, w = self.px.shape[:2]
        raw = np.hstack([np.zeros((h, 1), np.uint8), self.px.reshape(h, w * 3)]).tobytes()  # filter 0 per row

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def text_width(s: str, scale: int = 2) -> int:
    return max(0, len(s) * 4 - 1) * scale


def nice_ticks(top: float, n: int = 5, integer: bool = False) -> list[float]:
    """0, step, 2*step, ... covering top, with step 1/2/5 x 10^k."""
    top = max(top, 1.0 if integer else 1e-9)
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(step, 1.0) if integer else step
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1 or v == 0 else f"{v:.2g}"


def y_axis(cv: Canvas, x0: int, y0: int, x1: int, y1: int, ticks: list[float]) -> None:
    for t in ticks:
        y = y1 - (y1 - y0) * t / ticks[-1]
        cv.rect(x0, y, x1, y + 1, LIGHT)
        cv.text(x0 - 6, y - 5, _label(t), GREY, right=True)
    cv.rect(x0, y0, x0 + 1, y1 + 1, BLACK)
    cv.rect(x0, y1, x1, y1 + 1, BLACK)


def _num(rec: dict[str, Any], key: str) -> float:
    v = rec.get(key)
    return max(0.0, float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _sort_key(rec: dict[str, Any]) -> tuple[float, str, float]:
    return _num(rec, "ts"), str(rec.get("session_id")), _num(rec, "turn_id")


def stacked_bars(cv: Canvas, recs: list[dict[str, Any]], x0: int, y0: int, x1: int, y1: int) -> None:
    recs = sorted(recs, key=_sort_key)
    per_bar = max(1, math.ceil(len(recs) / ((x1 - x0) // 2)))  # at least 2 px per bar
    groups = [recs[i:i + per_bar] for i in range(0, len(recs), per_bar)]
    parts = np.zeros((len(groups), len(STACK)))  # [bars, stages], ms averaged over the bar's turns
    for b, group in enumerate(groups):
        for rec in group:
            known = [_num(rec, key) for _, key, _ in STACK if key is not None]
            parts[b] += [*known, max(0.0, _num(rec, "voice_to_voice_ms") - sum(known))]
        parts[b] /= len(group)
    title = "PER TURN LATENCY MS - BAR HEIGHT = VOICE TO VOICE"
    title += f" - {per_bar} TURNS AVERAGED PER BAR" if per_bar > 1 else ""
    cv.text(x0, y0 - 44, title)
    lx = x0
    for name, _, color in [*STACK, ("INTERRUPTED", None, INTERRUPTED), ("FAILED", None, FAILED)]:
        cv.rect(lx, y0 - 24, lx + 12, y0 - 12, color)
        cv.text(lx + 17, y0 - 23, name)
        lx += 17 + text_width(name) + 20
    ticks = nice_ticks(float(parts.sum(axis=1).max()) if len(parts) else 1.0)
    y_axis(cv, x0, y0, x1, y1, ticks)
    scale = (y1 - y0) / ticks[-1]
    width = min(60.0, (x1 - x0 - 2) / max(1, len(groups)))  # a few turns need no wall of colour
    gap = 1 if width >= 4 else 0
    label_every = max(1, math.ceil(len(groups) / ((x1 - x0) / 40)))
    for b, group in enumerate(groups):
        bx = x0 + 2 + b * width
        top = float(y1)
        for (_, _, color), ms in zip(STACK, parts[b], strict=True):
            cv.rect(bx, top - ms * scale, bx + width - gap, top, color)
            top -= ms * scale
        for row, (flag, color) in enumerate([(any(r.get("interrupted") is True for r in group), INTERRUPTED),
                                             (any(r.get("error") is not None for r in group), FAILED)]):
            if flag:
                cv.rect(bx, y1 + 4 + 6 * row, bx + max(width - gap, 1), y1 + 8 + 6 * row, color)
        if b % label_every == 0:
            cv.text(bx + width / 2 - text_width(str(b * per_bar + 1)) / 2, y1 + 18, str(b * per_bar + 1), GREY)
    cv.text(x1, y1 + 32, "TURN", GREY, right=True)


def histogram(cv: Canvas, title: str, values: list[float], color: Color, x0: int, y0: int, x1: int, y1: int,
              bins: int = 20) -> None:
    cv.text(x0, y0 - 22, f"{title} (N={len(values)})")
    if not values:
        y_axis(cv, x0, y0, x1, y1, [0.0, 1.0])
        cv.text((x0 + x1) / 2 - text_width("NO DATA") / 2, (y0 + y1) / 2, "NO DATA", GREY)
        return
    xticks = nice_ticks(max(values))
    counts, _ = np.histogram(values, bins=bins, range=(0.0, xticks[-1]))
    yticks = nice_ticks(float(counts.max()), integer=True)
    y_axis(cv, x0, y0, x1, y1, yticks)
    width = (x1 - x0 - 2) / bins
    for i, c in enumerate(counts):
        bx = x0 + 2 + i * width
        cv.rect(bx, y1 - (y1 - y0) * c / yticks[-1], bx + width - 1, y1, color)
    for t in xticks:
        x = x0 + 2 + (x1 - x0 - 2) * t / xticks[-1]
        cv.rect(x, y1, x + 1, y1 + 4, BLACK)
        cv.text(x - text_width(_label(t)) / 2, y1 + 8, _label(t), GREY)
    cv.text(x1, y1 + 24, "MS", GREY, right=True)


def render_png(recs: list[dict[str, Any]], width: int = 1200, height: int = 780) -> bytes:
    cv = Canvas(width, height)
    stacked_bars(cv, recs, 70, 60, width - 20, 400)
    half = width // 2
    v2v = [_num(r, "voice_to_voice_ms") for r in recs if r.get("voice_to_voice_ms") is not None]
    c2s = [_num(r, "cancel_to_silence_ms") for r in recs if r.get("cancel_to_silence_ms") is not None]
    histogram(cv, "VOICE TO VOICE MS", v2v, (40, 90, 170), 70, 480, half - 30, height - 50)
    histogram(cv, "CANCEL TO SILENCE MS", c2s, INTERRUPTED, half + 50, 480, width - 20, height - 50)
    return cv.png()


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
        Path(args.png).write_bytes(render_png([tl.record for tl in loaded.lines]))
        print(f"plot written to {args.png}", file=sys.stderr)
    problems = summary["malformed_lines"] or summary["negative_durations"]
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
