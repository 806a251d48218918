#!/usr/bin/env python3
"""Concurrent streaming clients against the speech API: TTFA p50/p95, RTF per stream, rejects, and
the underruns of a live call running on the same engine meanwhile.

    .venv/bin/python scripts/bench_speech_api.py --url http://127.0.0.1:8880 --api-key KEY --json out.json
    .venv/bin/python scripts/bench_speech_api.py --tiny --concurrency 1,4 --json out.json   # no server needed
    .venv/bin/python scripts/bench_speech_api.py --random-weights 0.6b --concurrency 1,2   # full size, in process

Each client is OpenAI's AsyncOpenAI (`audio.speech.with_streaming_response`, pcm, no retries) making
`--requests` requests one after another; all clients of a level start together. TTFA: request sent ->
first audio bytes received. RTF: a stream's wall time / its audio duration (below 1: faster than
real time). The engine keeps each stream at most SchedulerConfig.max_lead_s (1.5 s) ahead of
playback, so audio longer than that arrives at playback pace and its RTF tends to 1 by design;
`--no-pacing` lifts the limit to show raw generation speed. Rejects: 429 (per-key limit) and
503 (engine full) answers, counted, never retried. `--tiny` / `--random-weights SIZE` serve an
engine in this process (tiny: a CPU smoke test of the whole path; SIZE: the full-size architecture
with random weights, whose speed is the real model's), keeping the engine's default live reserve of
slots, and run a live call beside the API clients: LIVE-priority replies, one after another for as
long as the level runs, read as they decode; its underruns are the engine's count of packets ready
after their real-time playback deadline (`--url` has no live call to watch: run a call yourself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai

from agent.observe.trace_stats import stage_stats

TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."
PCM_BYTES_PER_S = 24000 * 2


async def one_request(client: openai.AsyncOpenAI, args: argparse.Namespace) -> dict[str, Any]:
    sent = time.perf_counter()
    first: float | None = None
    size = 0
    try:
        async with client.audio.speech.with_streaming_response.create(
                model=args.model, input=args.text, voice=args.voice, response_format="pcm") as response:
            async for chunk in response.iter_bytes():
                if first is None and chunk:
                    first = time.perf_counter()
                size += len(chunk)
    except openai.APIStatusError as exc:
        return {"status": exc.status_code}
    except openai.APIConnectionError as exc:
        return {"status": "error", "error": str(exc)[:200]}
    wall, audio_s = time.perf_counter() - sent, size / PCM_BYTES_PER_S
    return {"status": 200, "ttfa_ms": 1000 * ((first or sent) - sent), "wall_s": wall, "audio_s": audio_s,
            "rtf": wall / audio_s if audio_s else None}


async def level(url: str, api_key: str, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    async def client_run() -> list[dict[str, Any]]:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=600)
        async with client:
            return [await one_request(client, args) for _ in range(args.requests)]

    started = time.perf_counter()
    results = [r for rs in await asyncio.gather(*(client_run() for _ in range(clients))) for r in rs]
    wall = time.perf_counter() - started
    ok = [r for r in results if r["status"] == 200]
    audio = sum(r["audio_s"] for r in ok)
    return {"concurrency": clients, "requests": len(results), "ok": len(ok),
            "rejected": {str(k): v for k, v in Counter(r["status"] for r in results if r["status"] in (429, 503)).items()},
            "errors": sum(1 for r in results if r["status"] not in (200, 429, 503)),
            "ttfa_ms": stage_stats([r["ttfa_ms"] for r in ok]),
            "rtf": stage_stats([r["rtf"] for r in ok if r["rtf"] is not None]),
            "audio_s": round(audio, 2), "wall_s": round(wall, 2),
            "audio_s_per_wall_s": round(audio / wall, 2) if wall else None}


@contextlib.contextmanager
def local_service(args: argparse.Namespace) -> Iterator[tuple[str, str, Any]]:
    """An engine (tiny, or full size with random weights) and the API on a free loopback port, in
    this process: (url, key, engine)."""
    import torch

    from speech_api import BackgroundServer, SpeechApiConfig, make_app
    from tts_engine import EngineConfig, FrameCapConfig, SchedulerConfig, TTSEngine
    from tts_engine.tiny_checkpoint import build_tiny_checkpoint

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        scheduler = SchedulerConfig(max_lead_s=None) if args.no_pacing else SchedulerConfig()
        # the engine keeps its default live reserve free (as in the agent) beside the live call's own slot
        slots = args.max_streams or max(args.concurrency) + EngineConfig.live_reserve_slots + 1
        source = {"random_weights": args.random_weights} if args.random_weights else \
            {"model": str(build_tiny_checkpoint(Path(tmp) / "tiny"))}
        frame_cap = FrameCapConfig(base_frames=10, frames_per_text_token=2) if args.tiny else FrameCapConfig()
        cfg = EngineConfig(**source, max_streams=slots, scheduler=scheduler, frame_cap=frame_cap,
                           cpu_threads=args.threads)
        print(f"loading the engine ({'tiny' if args.tiny else args.random_weights}, {slots} slots) ...", flush=True)
        with TTSEngine(cfg) as engine, BackgroundServer(make_app(engine, SpeechApiConfig(
                max_streams_per_key=max(args.concurrency)))) as server:
            yield server.url, "unused", engine


async def live_call(engine: Any, text: str, voice: str, stop: asyncio.Event) -> dict[str, Any]:
    """LIVE replies one after another until `stop`: replies, their underruns, first-packet times."""
    from tts_engine import Priority

    replies, underruns, first_ms = 0, 0, []
    while not stop.is_set():
        opened = time.perf_counter()
        stream = engine.open_stream(voice, priority=Priority.LIVE)
        for word in text.split(" "):  # as an LLM hands over its reply, a word at a time
            stream.push_text(word + " ")
        stream.end_text()
        async for _packet in stream:
            if len(first_ms) == replies:
                first_ms.append(1000 * (time.perf_counter() - opened))
        replies += 1
        underruns += stream.stats.underruns
    return {"replies": replies, "underruns": underruns, "first_packet_ms": stage_stats(first_ms)}


def print_table(levels: list[dict[str, Any]]) -> None:
    head = f"{'clients':>7} {'reqs':>5} {'ok':>4} {'429':>4} {'503':>4} {'err':>4} {'TTFA p50':>9} {'TTFA p95':>9} " \
           f"{'RTF p50':>8} {'RTF p95':>8} {'audio/wall':>10} {'live replies':>12} {'live underruns':>14}"
    print(head)
    print("-" * len(head))
    for lv in levels:
        t, r = lv["ttfa_ms"], lv["rtf"]
        print(f"{lv['concurrency']:>7} {lv['requests']:>5} {lv['ok']:>4} {lv['rejected'].get('429', 0):>4} "
              f"{lv['rejected'].get('503', 0):>4} {lv['errors']:>4} {_fmt(t['p50'], 'ms'):>9} {_fmt(t['p95'], 'ms'):>9} "
              f"{_fmt(r['p50']):>8} {_fmt(r['p95']):>8} {_fmt(lv['audio_s_per_wall_s'], 'x'):>10} "
              f"{lv.get('live_call', {}).get('replies', '-'):>12} {lv.get('live_call', {}).get('underruns', '-'):>14}")


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}" if unit != "ms" else f"{value:.0f} ms"


async def bench(url: str, api_key: str, engine: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    levels = []
    for clients in args.concurrency:
        stop = asyncio.Event()
        live = asyncio.create_task(live_call(engine, args.text, args.voice, stop)) if engine is not None else None
        levels.append(await level(url, api_key, clients, args))
        stop.set()
        if live is not None:
            levels[-1]["live_call"] = await live
        print(f"  {clients} client(s): {levels[-1]['ok']}/{levels[-1]['requests']} ok", flush=True)
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the running service's root, e.g. http://127.0.0.1:8880")
    where.add_argument("--tiny", action="store_true", help="serve a tiny random-weight engine in this process")
    where.add_argument("--random-weights", choices=("0.6b", "1.7b"),
                       help="serve the full-size architecture with random weights in this process")
    parser.add_argument("--api-key", default=os.environ.get("SPEECH_API_KEY", "unused"),
                        help="a key of the service (default: SPEECH_API_KEY)")
    parser.add_argument("--concurrency", default="1,4,16,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--voice", default="ryan")
    parser.add_argument("--model", default="qwen3-tts")
    parser.add_argument("--no-pacing", action="store_true", help="in process: no max_lead_s (raw generation speed)")
    parser.add_argument("--max-streams", type=int, help="in process: engine slots (default: the largest "
                        "concurrency + the live reserve + the live call; fewer shows the 503 rejects)")
    parser.add_argument("--threads", type=int, default=1, help="in process: torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    in_process = args.tiny or args.random_weights
    remote = (args.url.rstrip("/") if args.url else "", args.api_key, None)
    with local_service(args) if in_process else contextlib.nullcontext(remote) as (url, key, engine):
        levels = asyncio.run(bench(url, key, engine, args))
    print_table(levels)
    if args.json:
        report = {"url": args.url, "tiny": args.tiny, "random_weights": args.random_weights,
                  "threads": args.threads if in_process else None, "no_pacing": args.no_pacing,
                  "text": args.text, "voice": args.voice, "requests_per_client": args.requests, "levels": levels,
                  "machine": {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
