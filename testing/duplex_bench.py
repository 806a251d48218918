"""The duplex benchmark's calls and analysis (scripts/bench_duplex.py is its command line): what the
listener said and heard, lined up with the agent's trace stamps on the one monotonic clock of a
host, into per-barge-in and per-turn stages (ms after our speech onset / our true end of speech)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.observe.trace_stats import stage_stats

from .host_cpu import cpu_share, cpu_ticks

if TYPE_CHECKING:
    from .utterances import Utterance

BARGE_IN_STAGES = ("agent_onset", "paused", "vad_detected", "cut", "agent_silent", "played_silent", "heard_silent")
TURN_STAGES = ("agent_end", "end_of_speech", "stt_done", "committed", "llm_first_token", "tts_first_audio", "published",
               "played", "heard")
# per turn, derived (ms): what the listener waited beyond deciding the turn was over and the three models -
# to the first reply audio at the listener and (the page only) to its first packet handed to playout,
# which is what the page's <audio> element plays; the page's level meter taps WebAudio after that
TURN_BUDGET = ("endpointing_wait", "model_time", "beyond_endpointing_and_models", "beyond_at_playout")
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
    model_time = sum(v for v in models if v is not None)  # none is, here
    played = event["played"]
    return {"endpointing_wait": round(endpointing, 1), "model_time": round(model_time, 1),
            "beyond_endpointing_and_models": round(event["heard"] - endpointing - model_time, 1),
            "beyond_at_playout": None if played is None else round(played - endpointing - model_time, 1)}


def analyse(spoken: list[dict[str, Any]], records: list[dict[str, Any]], heard_at: list[float],
            played_at: list[float] | None = None, played_ends: bool = True) -> dict[str, Any]:
    """`heard_at`: when agent audio reached the listener; `played_at` (the page only): when each voiced
    agent packet left the jitter buffer for playout, before the browser's audio rendering - or, where
    not `played_ends`, only the first packet of each reply (a cut reply's end is then not measured)."""
    onsets = [s["onset"] for s in spoken]
    barge_ins = [barge_in_event(s, records, heard_at, played_at if played_ends else None)
                 for s in spoken if s["barging"]]
    turns = [turn_event(s, onsets[k + 1] if k + 1 < len(onsets) else None, records, heard_at, played_at)
             for k, s in enumerate(spoken)]
    return stats_of(barge_ins, turns)


def stats_of(barge_ins: list[dict[str, Any]], turns: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95/max of every stage over these events (one call's, or several calls' pooled)."""
    counted = [b for b in barge_ins if b["agent_was_audible"]]  # one that came after the reply ended cut nothing
    return {
        "barge_ins": barge_ins, "turns": turns,
        "barge_in_stages_ms": {s: stage_stats([b[s] for b in counted if b[s] is not None]) for s in BARGE_IN_STAGES},
        "turn_stages_ms": {s: stage_stats([t[s] for t in turns if t[s] is not None]) for s in TURN_STAGES},
        "turn_budget_ms": {s: stage_stats([t[s] for t in turns if t[s] is not None]) for s in TURN_BUDGET},
        "barge_ins_counted": len(counted), "turns_counted": sum(t["heard"] is not None for t in turns),
    }


def listener_path(turns: list[dict[str, Any]], to: str = "heard") -> dict[str, Any]:
    """A call's first-frame-published -> reply-at-the-listener wait, over its turns: the transport and
    the listener's receive path. Its framing phases (the room source's tick, the Opus packet, the
    receiver's jitter buffer and pull) are set when a call connects, so this moves as a whole from one
    call to the next - which is why the pooled figures of several calls are the fairer ones."""
    return stage_stats([t[to] - t["published"] for t in turns if t[to] is not None and t["published"] is not None])


def pool_calls(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Several calls' results as one report: every stage pooled over all their events, and per call
    what sets its level (its listener path, its jitter buffer) and what went wrong in it."""
    first = calls[0]
    pooled = stats_of([b for c in calls for b in c["barge_ins"]], [t for c in calls for t in c["turns"]])
    failures = [f"call {k + 1}: {f}" if len(calls) > 1 else f for k, c in enumerate(calls) for f in c["failures"]]
    per_call = [{"call": k + 1, "barge_ins_counted": c["barge_ins_counted"], "turns_counted": c["turns_counted"],
                 "published_to_heard_ms": listener_path(c["turns"]),
                 "published_to_played_ms": listener_path(c["turns"], "played"),
                 "listener_receive_buffer": c.get("listener_receive_buffer"), "page": c.get("page")}
                for k, c in enumerate(calls)]
    report = {"mode": first["mode"], "client": first["client"], "failures": failures, **pooled, "calls": per_call}
    for key in ("page", "listener_receive_buffer"):  # the last call's, as a single call reports it
        if calls[-1].get(key) is not None:
            report[key] = calls[-1][key]
    return report


def summary(result: dict[str, Any], mode: str) -> str:
    lines = [f"bench_duplex ({mode}): {result['barge_ins_counted']} barge-ins over a speaking agent, "
             f"{result['turns_counted']} turns heard",
             f"  {'barge-in, ms after our onset':32s} {'n':>4s} {'p50':>8s} {'p95':>8s} {'max':>8s}"]

    def row(name: str, st: dict[str, Any]) -> str:
        cells = [f"{_cell(st[k]):>8s}" for k in ("p50", "p95", "max")]
        return f"  {name:32s} {st['n']:4d} {' '.join(cells)}"
    lines += [row(s, st) for s, st in result["barge_in_stages_ms"].items()]
    lines.append(f"  {'turn, ms after our end of speech':32s}")
    lines += [row(s, st) for s, st in result["turn_stages_ms"].items()]
    lines.append(f"  {'turn, ms spent on':32s}")
    lines += [row(s, st) for s, st in result["turn_budget_ms"].items()]
    if page := result.get("page"):
        lines.append(f"  the page's playout stamps told by: {page.get('played_by')}")
    if cpu := result.get("host_cpu"):
        lines.append(f"  the host's CPUs over the run: {cpu['busy_pct']}% busy, {cpu['steal_pct']}% stolen by "
                     "the hypervisor (a quiet run has next to none)")
    calls = result.get("calls") or []
    if len(calls) > 1:
        lines.append(f"  {len(calls)} calls pooled; per call, first frame published -> reply at the listener, p50 ms "
                     "(the transport's framing phases, set as each call connects):")
        for c in calls:
            heard, played = c["published_to_heard_ms"]["p50"], c["published_to_played_ms"]["p50"]
            buffer = (c.get("listener_receive_buffer") or {}).get("mean_ms") or (c.get("page") or {}).get("jitter_buffer_ms")
            lines.append(f"    call {c['call']}: heard {_cell(heard)}" + (f", played {_cell(played)}" if played is not None else "")
                         + (f", jitter buffer mean {buffer:.1f}" if buffer is not None else ""))
    if len(calls) <= 1 and (buffer := result.get("listener_receive_buffer")):
        lines.append(f"  the listener's jitter buffer over the call: mean {buffer['mean_ms']:.1f} ms, target "
                     f"{buffer['target_ms']:.1f}, minimum {buffer['minimum_ms']:.1f} (WebRTC inbound-rtp stats)")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def barge_ins_per_call(barge_ins: int, calls: int) -> list[int]:
    """N barge-ins spread over the calls as evenly as they go (the first calls take the remainder)."""
    return [barge_ins // calls + (k < barge_ins % calls) for k in range(calls)]


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """`args.calls` calls, one after another, that together make `args.barge_ins` barge-ins, each call
    2n+1 turns talking over every other reply (the options of scripts/bench_duplex.py), through the
    soak's client or (--browser) the page in Chromium; the pooled analysis, and how busy the host's
    CPUs were meanwhile (the agent, the listener and everything else on the box)."""
    from .utterances import make_utterances

    before = cpu_ticks()
    shares = barge_ins_per_call(args.barge_ins, args.calls)
    calls = []
    with tempfile.TemporaryDirectory(prefix="bench-duplex-") as tmp:
        # every call says the same sentences from the first on: synthesize them once, for the longest call
        utterances = make_utterances(2 * shares[0] + 1, Path(tmp))
        for k, barge_ins in enumerate(shares):
            if len(shares) > 1:
                print(f"[bench_duplex] call {k + 1}/{len(shares)}: {barge_ins} barge-ins, {2 * barge_ins + 1} turns",
                      flush=True)
            calls.append(await _run_call(args, utterances[:2 * barge_ins + 1], Path(tmp), args.seed + k))
    return {**pool_calls(calls), "host_cpu": cpu_share(before, cpu_ticks())}


async def _run_call(args: argparse.Namespace, utterances: list[Utterance], workdir: Path,
                    seed: int) -> dict[str, Any]:
    """One call saying `utterances` (`workdir`: where the page's microphone file goes)."""
    import aiohttp

    from .soak import Soak, call, get_token, make_client

    if args.browser:
        from .browser_call import browser_call
        heard = await browser_call(args.base, utterances, workdir)
        failures = [f"the page showed: {e}" for e in heard["errors"]]
        result = analyse(heard["spoken"], heard["records"], heard["heard_at"], heard["played_at"],
                         played_ends=not heard["reply_starts_only"])
        return {"mode": heard["mode"], "client": "chromium", "failures": failures, "page": heard["page"], **result}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        grant = await get_token(http, args.base.rstrip("/"), f"bench-duplex-{os.getpid()}")
        client = make_client(grant.get("mode"), args.metrics_url)
        soak = Soak(client, utterances, args.turn_timeout, args.max_reply, seed, barge_in_every=2)
        await call(http, client, grant, soak, asyncio.Lock())
    if soak.failures:
        print("bench_duplex: the conversation had problems:\n  " + "\n  ".join(soak.failures), file=sys.stderr)
    result = analyse(soak.spoken, soak.turns(), list(client.voiced_at))
    return {"mode": grant.get("mode"), "client": type(client).__name__, "failures": soak.failures,
            "listener_receive_buffer": client.receive_buffer, **result}
