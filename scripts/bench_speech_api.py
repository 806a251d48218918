#!/usr/bin/env python3
"""Concurrent streaming clients against the speech API: TTFA p50/p95, RTF per stream, rejects.

    .venv/bin/python scripts/bench_speech_api.py --url http://127.0.0.1:8880 --api-key KEY --json out.json
    .venv/bin/python scripts/bench_speech_api.py --tiny --concurrency 1,4 --json out.json   # no server needed

Each client is OpenAI's AsyncOpenAI (`audio.speech.with_streaming_response`, pcm, no retries) making
`--requests` requests one after another; all clients of a level start together. TTFA: request sent ->
first audio bytes received. RTF: a stream's wall time / its audio duration (below 1: faster than
real time). The engine keeps each stream at most SchedulerConfig.max_lead_s (1.5 s) ahead of
playback, so audio longer than that arrives at playback pace and its RTF tends to 1 by design;
`--tiny --no-pacing` lifts the limit to show raw generation speed. Rejects: 429 (per-key limit) and
503 (engine full) answers, counted, never retried. `--tiny` serves a tiny random-weight engine in
this process (a CPU smoke test of the whole path, not a speed figure for a real checkpoint).
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

from agent.trace_stats import stage_stats

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
def tiny_service(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """A tiny random-weight engine and the API on a free loopback port, in this process."""
    import torch

    from speech_api import BackgroundServer, SpeechApiConfig, make_app
    from tts_engine import EngineConfig, FrameCapConfig, SchedulerConfig, TTSEngine
    from tts_engine.tiny_checkpoint import build_tiny_checkpoint

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scheduler = SchedulerConfig(max_lead_s=None) if args.no_pacing else SchedulerConfig()
        slots = args.tiny_max_streams or max(args.concurrency)
        # no live calls here, as with `python -m speech_api` alone: no slot is kept for them
        cfg = EngineConfig(model=str(build_tiny_checkpoint(Path(tmp) / "tiny")), max_streams=slots,
                           live_reserve_slots=0, scheduler=scheduler,
                           frame_cap=FrameCapConfig(base_frames=10, frames_per_text_token=2))
        with TTSEngine(cfg) as engine, BackgroundServer(make_app(engine, SpeechApiConfig(
                max_streams_per_key=max(args.concurrency)))) as server:
            yield server.url, "unused"


def print_table(levels: list[dict[str, Any]]) -> None:
    head = f"{'clients':>7} {'reqs':>5} {'ok':>4} {'429':>4} {'503':>4} {'err':>4} {'TTFA p50':>9} {'TTFA p95':>9} " \
           f"{'RTF p50':>8} {'RTF p95':>8} {'audio/wall':>10}"
    print(head)
    print("-" * len(head))
    for lv in levels:
        t, r = lv["ttfa_ms"], lv["rtf"]
        print(f"{lv['concurrency']:>7} {lv['requests']:>5} {lv['ok']:>4} {lv['rejected'].get('429', 0):>4} "
              f"{lv['rejected'].get('503', 0):>4} {lv['errors']:>4} {_fmt(t['p50'], 'ms'):>9} {_fmt(t['p95'], 'ms'):>9} "
              f"{_fmt(r['p50']):>8} {_fmt(r['p95']):>8} {_fmt(lv['audio_s_per_wall_s'], 'x'):>10}")


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}" if unit != "ms" else f"{value:.0f} ms"


async def bench(url: str, api_key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    levels = []
    for clients in args.concurrency:
        levels.append(await level(url, api_key, clients, args))
        print(f"  {clients} client(s): {levels[-1]['ok']}/{levels[-1]['requests']} ok", flush=True)
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the running service's root, e.g. http://127.0.0.1:8880")
    where.add_argument("--tiny", action="store_true", help="serve a tiny random-weight engine in this process")
    parser.add_argument("--api-key", default=os.environ.get("SPEECH_API_KEY", "unused"),
                        help="a key of the service (default: SPEECH_API_KEY)")
    parser.add_argument("--concurrency", default="1,4,16,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--voice", default="ryan")
    parser.add_argument("--model", default="qwen3-tts")
    parser.add_argument("--no-pacing", action="store_true", help="--tiny: no max_lead_s (raw generation speed)")
    parser.add_argument("--tiny-max-streams", type=int, help="--tiny: engine slots (default: the largest "
                        "concurrency; fewer shows the 503 rejects)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tiny_service(args) if args.tiny else contextlib.nullcontext((args.url.rstrip("/"), args.api_key)) as (url, key):
        levels = asyncio.run(bench(url, key, args))
    print_table(levels)
    if args.json:
        report = {"url": None if args.tiny else args.url, "tiny": args.tiny, "no_pacing": args.no_pacing,
                  "text": args.text, "voice": args.voice, "requests_per_client": args.requests, "levels": levels,
                  "machine": {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
