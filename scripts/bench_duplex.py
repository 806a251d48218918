#!/usr/bin/env python3
"""Barge-in and voice-to-voice as the listener hears them: every stage, on one clock.

    scripts/start_all.sh start      # any mode; AGENT_TRANSPORT=direct or livekit to choose
    .venv/bin/python scripts/bench_duplex.py --barge-ins 20 --json bench_duplex.json [--png bench_duplex.png]

Drives the RUNNING system as a user with the soak's client (an aiortc peer in direct mode, a LiveKit
room participant in LiveKit mode): it speaks 2N+1 espeak-ng utterances in real time and talks over
every other reply 0.8 s after the agent starts it (N barge-ins, 2N+1 turns). The client runs on the
agent's host, so both read the same monotonic clock: the agent's stamps (each trace record's
"clock") and the client's own (when it spoke, when each agent audio frame arrived) are one timeline.

Per barge-in, ms after our speech onset (the first loud sample we sent):
  agent_onset      where the agent places the onset (its VAD's START_OF_SPEECH, backdated)
  paused           the agent's output was silenced (the first hot VAD window: the early pause)
  vad_detected     the VAD's START_OF_SPEECH reached the duplex controller
  cut              the cut was issued (output cleared, engine streams and LLM cancelled)
  agent_silent     the agent's last audio left it (end of the frame in flight)
  played_silent    (--browser) the cut reply's last packet left the page's jitter buffer for playout
  heard_silent     the last agent audio frame arrived here: the stop latency a person hears
Per turn, ms after our true end of speech (the last loud sample we sent):
  agent_end        where the agent places the end (END_OF_SPEECH, backdated by the silence waited)
  end_of_speech    the VAD's END_OF_SPEECH (its silence wait ends)
  stt_done         the transcript is in
  committed        the turn is committed and the LLM asked (after livekit's end-of-turn delay and,
                   with AGENT_END_OF_TURN=smart_turn, the turn model's verdict)
  llm_first_token, tts_first_audio, published (first frame handed to the transport)
  played           (--browser) its first packet left the page's jitter buffer for playout
  heard            the first agent audio frame of the reply arrived here: voice-to-voice as heard
and per turn: endpointing_wait (end_of_speech + committed - stt_done: deciding the turn was over),
model_time (STT + LLM first token + TTS first audio, from the trace) and what the listener waited
beyond both (heard - endpointing_wait - model_time: queues, transports, the wire).
Writes p50/p95/max of each (JSON) and a plot of every event's timeline (PNG). Loopback only: the
clocks are one only on one host. Numbers cover the network stack and the client's receive path
(aiortc / the LiveKit SDK), not a loudspeaker. With --browser the page in real Chromium is the user
(scripts/bench_browser.py): its own microphone and its WebAudio graph after Chromium's jitter buffer
are the two timelines, each utterance at a planned moment instead of in reaction to the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from soak_report import fill_endpoints, write_json  # noqa: E402

from agent.trace_stats import stage_stats  # noqa: E402

BARGE_IN_STAGES = ("agent_onset", "paused", "vad_detected", "cut", "agent_silent", "played_silent", "heard_silent")
TURN_STAGES = ("agent_end", "end_of_speech", "stt_done", "committed", "llm_first_token", "tts_first_audio", "published",
               "played", "heard")
# per turn, derived (ms): what the listener waited beyond deciding the turn was over and the three models
TURN_BUDGET = ("endpointing_wait", "model_time", "beyond_endpointing_and_models")
# trace clock key of each stage
BARGE_IN_CLOCK = {"agent_onset": "barge_in_onset", "paused": "barge_in_paused", "vad_detected": "barge_in_detected",
                  "cut": "barge_in_cut", "agent_silent": "barge_in_silent"}
TURN_CLOCK = {"agent_end": "speech_end", "end_of_speech": "vad_end", "stt_done": "stt_done", "committed": "llm_started",
              "llm_first_token": "llm_first_token", "tts_first_audio": "tts_first_audio", "published": "published"}
MATCH_WINDOW_S = 3.0  # an agent stamp this far from the moment it estimates belongs to another event
REPLY_WINDOW_S = 60.0  # the first agent audio after our speech within this is its reply


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 1)


def nearest(records: list[dict[str, Any]], key: str, at: float) -> dict[str, Any] | None:
    """The record whose clock[key] is nearest to `at`, within MATCH_WINDOW_S."""
    best = min((r for r in records if key in r.get("clock", {})), key=lambda r: abs(r["clock"][key] - at),
               default=None)
    return best if best is not None and abs(best["clock"][key] - at) <= MATCH_WINDOW_S else None


def last_during(times: list[float] | None, start: float, end: float) -> float | None:
    """The last of `times` in (start, end]; None if none (or not measured)."""
    inside = [t for t in times or () if start < t <= end]
    return inside[-1] if inside else None


def barge_in_event(said: dict[str, Any], records: list[dict[str, Any]], heard_at: list[float],
                   played_at: list[float] | None = None) -> dict[str, Any]:
    """One barge-in's stages, ms after our onset; None where the agent or the wire showed nothing."""
    onset = said["onset"]
    rec = nearest([r for r in records if r.get("interrupted")], "barge_in_onset", onset)
    clock = rec["clock"] if rec is not None else {}
    event: dict[str, Any] = {"turn": said["turn"], "matched_turn_id": rec.get("turn_id") if rec else None}
    for stage, key in BARGE_IN_CLOCK.items():
        event[stage] = _ms(onset, clock.get(key))
    # the cut reply's audio that still arrived while we talked (the next reply cannot start before we stop)
    event["played_silent"] = _ms(onset, last_during(played_at, onset, said["sent_until"]))
    event["heard_silent"] = _ms(onset, last_during(heard_at, onset, said["sent_until"]))
    event["agent_was_audible"] = any(onset - 1.0 < t <= onset for t in heard_at)
    return event


def turn_event(said: dict[str, Any], next_onset: float | None, records: list[dict[str, Any]],
               heard_at: list[float], played_at: list[float] | None = None) -> dict[str, Any]:
    """One turn's stages, ms after our true end of speech."""
    end = said["speech_end"]
    rec = nearest(records, "vad_end", end)
    clock = rec["clock"] if rec is not None else {}
    event: dict[str, Any] = {"turn": said["turn"], "matched_turn_id": rec.get("turn_id") if rec else None}
    for stage, key in TURN_CLOCK.items():
        event[stage] = _ms(end, clock.get(key))
    limit = min(end + REPLY_WINDOW_S, next_onset) if next_onset is not None else end + REPLY_WINDOW_S
    first = next((t for t in heard_at if end < t <= limit), None)
    event["played"] = _ms(end, next((t for t in played_at or () if end < t <= limit), None))
    event["heard"] = _ms(end, first)
    event.update(turn_budget(event, rec or {}))
    return event


def turn_budget(event: dict[str, Any], rec: dict[str, Any]) -> dict[str, float | None]:
    """The turn's wait split into deciding the turn was over, the models, and everything else."""
    stages = [event["end_of_speech"], event["stt_done"], event["committed"], event["heard"]]
    models = [rec.get("stt_ms"), rec.get("llm_ttft_ms"), rec.get("tts_ttfa_ms")]
    if any(v is None for v in stages) or any(v is None for v in models):
        return dict.fromkeys(TURN_BUDGET)
    endpointing = event["end_of_speech"] + max(0.0, event["committed"] - event["stt_done"])
    model_time = sum(models)
    return {"endpointing_wait": round(endpointing, 1), "model_time": round(model_time, 1),
            "beyond_endpointing_and_models": round(event["heard"] - endpointing - model_time, 1)}


def analyse(spoken: list[dict[str, Any]], records: list[dict[str, Any]], heard_at: list[float],
            played_at: list[float] | None = None) -> dict[str, Any]:
    """`heard_at`: when agent audio reached the listener; `played_at` (the page only): when each agent
    packet left the jitter buffer for playout, before the browser's audio rendering."""
    onsets = [s["onset"] for s in spoken]
    barge_ins = [barge_in_event(s, records, heard_at, played_at) for s in spoken if s["barging"]]
    turns = [turn_event(s, onsets[k + 1] if k + 1 < len(onsets) else None, records, heard_at, played_at)
             for k, s in enumerate(spoken)]
    counted = [b for b in barge_ins if b["agent_was_audible"]]  # one that came after the reply ended cut nothing
    return {
        "barge_ins": barge_ins, "turns": turns,
        "barge_in_stages_ms": {s: stage_stats([b[s] for b in counted if b[s] is not None]) for s in BARGE_IN_STAGES},
        "turn_stages_ms": {s: stage_stats([t[s] for t in turns if t[s] is not None]) for s in TURN_STAGES},
        "turn_budget_ms": {s: stage_stats([t[s] for t in turns if t[s] is not None]) for s in TURN_BUDGET},
        "barge_ins_counted": len(counted), "turns_counted": sum(t["heard"] is not None for t in turns),
    }


def plot(result: dict[str, Any], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 9))
    for ax, events, stages, origin in (
            (top, [b for b in result["barge_ins"] if b["agent_was_audible"]], BARGE_IN_STAGES, "our speech onset"),
            (bottom, result["turns"], TURN_STAGES, "our end of speech")):
        colors = plt.get_cmap("tab10").colors
        for row, event in enumerate(events):
            start = 0.0
            for k, stage in enumerate(stages):
                value = event[stage]
                if value is None:
                    continue
                # each stage as the stretch since the previous one that happened (negative: estimates before 0)
                ax.barh(row, value - start, left=start, color=colors[k % len(colors)],
                        label=stage if row == 0 else None, height=0.7)
                start = value
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"ms after {origin}")
        ax.set_ylabel("event")
        ax.legend(loc="lower right", fontsize=8)
    top.set_title(f"{title}: barge-in, onset -> silent at the listener")
    bottom.set_title("turns: end of speech -> first reply audio at the listener")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def summary(result: dict[str, Any], mode: str) -> str:
    lines = [f"bench_duplex ({mode}): {result['barge_ins_counted']} barge-ins over a speaking agent, "
             f"{result['turns_counted']} turns heard",
             f"  {'barge-in, ms after our onset':32s} {'n':>4s} {'p50':>8s} {'p95':>8s} {'max':>8s}"]

    def row(name: str, st: dict[str, Any]) -> str:
        cells = [f"{st[k]:8.1f}" if st[k] is not None else f"{'-':>8s}" for k in ("p50", "p95", "max")]
        return f"  {name:32s} {st['n']:4d} {' '.join(cells)}"
    lines += [row(s, st) for s, st in result["barge_in_stages_ms"].items()]
    lines.append(f"  {'turn, ms after our end of speech':32s}")
    lines += [row(s, st) for s, st in result["turn_stages_ms"].items()]
    lines.append(f"  {'turn, ms spent on':32s}")
    lines += [row(s, st) for s, st in result["turn_budget_ms"].items()]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from soak import Soak, call, get_token, make_client
    from soak_client import make_utterances

    with tempfile.TemporaryDirectory(prefix="bench-duplex-") as tmp:
        utterances = make_utterances(2 * args.barge_ins + 1, Path(tmp))
        if args.browser:
            from bench_browser import browser_call
            heard = await browser_call(args.base, utterances, Path(tmp))
            failures = [f"the page showed: {e}" for e in heard["errors"]]
            return {"mode": heard["mode"], "client": "chromium", "failures": failures, "page": heard["page"],
                    **analyse(heard["spoken"], heard["records"], heard["heard_at"], heard["played_at"])}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        grant = await get_token(http, args.base.rstrip("/"), f"bench-duplex-{os.getpid()}")
        client = make_client(grant.get("mode"), args)
        soak = Soak(client, utterances, args.turn_timeout, args.max_reply, args.seed, barge_in_every=2)
        await call(http, client, grant, soak, asyncio.Lock())
    if soak.failures:
        print("bench_duplex: the conversation had problems:\n  " + "\n  ".join(soak.failures), file=sys.stderr)
    result = analyse(soak.spoken, soak.turns(), list(client.voiced_at))
    return {"mode": grant.get("mode"), "client": type(client).__name__, "failures": soak.failures, **result}


def main(argv: list[str] | None = None) -> int:
    from soak import add_call_args  # after sys.path has scripts/

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--barge-ins", type=int, default=20, help="barge-ins to make (2N+1 turns; default 20)")
    ap.add_argument("--json", metavar="OUT", required=True, help="write the JSON report here")
    ap.add_argument("--png", metavar="OUT", help="timeline plot (default: the JSON path with .png)")
    ap.add_argument("--browser", action="store_true",
                    help="speak through the page in real Chromium (Debian's chromium) instead of the soak's client")
    add_call_args(ap)
    args = ap.parse_args(argv)
    if args.barge_ins < 1:
        ap.error("--barge-ins must be >= 1")
    fill_endpoints(args)
    report = asyncio.run(run(args))
    out = write_json(report, args.json)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot(report, png, f"bench_duplex, {report['mode']} mode, {report['client']}")
    print(summary(report, f"{report['mode']} mode, client {report['client']}"), end="")
    print(f"report: {out}  plot: {png}")
    return 0 if not report["failures"] and report["barge_ins_counted"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
