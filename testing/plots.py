"""Every PNG the scripts draw, with matplotlib (the dev extra) on its Agg canvas: no display, no
pyplot state. matplotlib is imported when a plot is drawn, not with this module.

- `trace_plot`: the trace report's three panels (scripts/trace_report.py --png, the soak's plot);
- `duplex_timeline`: every barge-in and turn of scripts/bench_duplex.py on one clock.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .duplex_bench import BARGE_IN_STAGES, TURN_STAGES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# (legend, trace key, colour) of the stacked bar, bottom up; None = the rest of voice-to-voice
STACK: tuple[tuple[str, str | None, str], ...] = (
    ("STT", "stt_ms", "#4285f4"), ("LLM first token", "llm_ttft_ms", "#34a853"),
    ("TTS first audio", "tts_ttfa_ms", "#fb8c00"), ("other (endpointing, hold-back, publishing)", None, "#aaaaaa"))
INTERRUPTED, FAILED, VOICE_TO_VOICE = "#8e44ad", "#db3737", "#285aaa"
MAX_BARS = 550  # beyond this many turns, consecutive turns are averaged into one bar
HIST_BINS = 20


def _figure(width_in: float, height_in: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit("the plots need matplotlib, from the dev extra: .venv/bin/pip install -e '.[dev]' "
                         "(scripts/test.sh installs it)") from None
    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def _num(rec: dict[str, Any], key: str) -> float:
    v = rec.get(key)
    return max(0.0, float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _in_time_order(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(recs, key=lambda r: (_num(r, "ts"), str(r.get("session_id")), _num(r, "turn_id")))


def _stacked_bars(top: Axes, flags: Axes, recs: list[dict[str, Any]]) -> None:
    """One bar per turn (or per group of turns beyond MAX_BARS): the stages stacked, their total the
    voice-to-voice latency; the flags strip under it marks interrupted and failed turns."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    recs = _in_time_order(recs)
    per_bar = max(1, math.ceil(len(recs) / MAX_BARS))
    groups = [recs[i:i + per_bar] for i in range(0, len(recs), per_bar)]
    parts = np.zeros((len(groups), len(STACK)))  # [bars, stages], ms averaged over the bar's turns
    for b, group in enumerate(groups):
        for rec in group:
            known = [_num(rec, key) for _, key, _ in STACK if key is not None]
            parts[b] += [*known, max(0.0, _num(rec, "voice_to_voice_ms") - sum(known))]
        parts[b] /= len(group)
    x = np.arange(len(groups)) * per_bar + 1 + (per_bar - 1) / 2  # the middle of each bar's turns
    bottom = np.zeros(len(groups))
    for (_, _, colour), ms in zip(STACK, parts.T, strict=True):
        top.bar(x, ms, bottom=bottom, width=0.8 * per_bar, color=colour)
        bottom += ms
    for row, (colour, flagged) in enumerate(((INTERRUPTED, lambda r: r.get("interrupted") is True),
                                             (FAILED, lambda r: r.get("error") is not None))):
        marked = [x[b] for b, group in enumerate(groups) if any(flagged(r) for r in group)]
        flags.bar(marked, 0.8, bottom=1 - row, width=0.8 * per_bar, color=colour)
    title = "per-turn latency: bar height = voice-to-voice"
    top.set_title(title + (f" ({per_bar} turns averaged per bar)" if per_bar > 1 else ""))
    top.set_ylabel("ms")
    top.set_ylim(0, 1.3 * max(float(bottom.max(initial=0.0)), 1.0))  # headroom for the legend
    top.grid(axis="y", color="#e1e1e1")
    top.set_axisbelow(True)
    legend = [(label, colour) for label, _, colour in STACK] + [("interrupted", INTERRUPTED), ("failed", FAILED)]
    top.legend(handles=[Patch(color=colour, label=label) for label, colour in legend], loc="upper left",
               fontsize=8, ncols=3)
    top.tick_params(labelbottom=False)
    flags.set_yticks([1.4, 0.4], ["interrupted", "failed"], fontsize=8)
    flags.set_ylim(0, 2)
    flags.set_xlabel("turn (in time order)")
    flags.set_xlim(0.5, max(1, len(recs)) + 0.5)
    flags.xaxis.set_major_locator(MaxNLocator(integer=True))


def _histogram(ax: Axes, title: str, values: list[float], colour: str) -> None:
    ax.set_title(f"{title} (n={len(values)})")
    ax.set_xlabel("ms")
    ax.set_ylabel("turns")
    if not values:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    from matplotlib.ticker import MaxNLocator

    ax.hist(values, bins=HIST_BINS, range=(0.0, max(max(values), 1e-9)), color=colour, rwidth=0.9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def trace_plot(recs: list[dict[str, Any]], path: Path) -> None:
    """Top: a stacked bar per turn in time order - STT (blue), LLM time to first token (green), TTS
    time to first audio (orange) and the rest of voice-to-voice (grey: endpointing, word hold-back,
    publishing); a turn without voice-to-voice stacks only the stages it has; marks under it:
    interrupted (purple), failed (red). Bottom: histograms of voice_to_voice_ms and of the
    interrupted turns' cancel_to_silence_ms."""
    fig = _figure(12, 7.8)
    grid = fig.add_gridspec(3, 2, height_ratios=[5, 0.6, 4])
    top = fig.add_subplot(grid[0, :])
    _stacked_bars(top, fig.add_subplot(grid[1, :], sharex=top), recs)
    v2v = [_num(r, "voice_to_voice_ms") for r in recs if r.get("voice_to_voice_ms") is not None]
    c2s = [_num(r, "cancel_to_silence_ms") for r in recs if r.get("cancel_to_silence_ms") is not None]
    _histogram(fig.add_subplot(grid[2, 0]), "voice-to-voice", v2v, VOICE_TO_VOICE)
    _histogram(fig.add_subplot(grid[2, 1]), "cancel -> silence (barge-ins)", c2s, INTERRUPTED)
    fig.savefig(path, format="png")


def duplex_timeline(result: dict[str, Any], path: Path, title: str) -> None:
    """One row per event: each stage as the stretch since the previous one that happened (negative:
    estimates before 0); top the barge-ins over a speaking agent, bottom the turns."""
    from matplotlib import color_sequences

    colours = color_sequences["tab10"]
    fig = _figure(11, 9)
    top, bottom = fig.subplots(2, 1)
    for ax, events, stages, origin in (
            (top, [b for b in result["barge_ins"] if b["agent_was_audible"]], BARGE_IN_STAGES, "our speech onset"),
            (bottom, result["turns"], TURN_STAGES, "our end of speech")):
        for row, event in enumerate(events):
            start = 0.0
            for k, stage in enumerate(stages):
                value = event[stage]
                if value is None:
                    continue
                ax.barh(row, value - start, left=start, color=colours[k % len(colours)],
                        label=stage if row == 0 else None, height=0.7)
                start = value
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"ms after {origin}")
        ax.set_ylabel("event")
        ax.legend(loc="lower right", fontsize=8)
    top.set_title(f"{title}: barge-in, onset -> silent at the listener")
    bottom.set_title("turns: end of speech -> first reply audio at the listener")
    fig.savefig(path, format="png", dpi=90)
