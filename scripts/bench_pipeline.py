#!/usr/bin/env python3
"""Pipeline overhead and barge-in benchmark: the headless agent against the fake Omni server.

    python scripts/bench_pipeline.py --turns 20 --json bench_pipeline.json

Runs a real AgentSession with real Silero and the tiny TTS engine on the CPU; the fake Omni answers
with zero added latency, so what is measured is the pipeline itself. Every other turn the user
barges in while the agent is speaking. Reports overhead (voice-to-voice minus the time inside STT,
LLM and TTS) and cancel-to-silence percentiles from the per-turn traces it writes (linear between
the closest ranks, as every report here: agent/observe/trace_stats.py's `percentile`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from livekit.plugins import silero

from agent.observe.trace_stats import stage_stats
from testing.fake_omni import FakeOmni
from testing.harness import Conversation, agent_config, speech_wav
from tts_engine import EngineConfig, FrameCapConfig, SchedulerConfig, TTSEngine
from tts_engine.tiny_checkpoint import build_tiny_checkpoint

UTTERANCES = ["Hello there how are you today", "What is the weather like tomorrow",
              "Tell me a story about the sea", "Wait stop I have another question", "Thank you very much"]
LONG_REPLY = " ".join(["This reply is long enough to be interrupted while it is still playing."] * 3)


async def run(turns: int, workdir: Path) -> dict:
    clips = [speech_wav(text, workdir / f"u{i}.wav", voice=["en-us", "en+f3"][i % 2], speed=160 + 10 * (i % 3))
             for i, text in enumerate(UTTERANCES)]
    texts = {}

    def transcript(wav: bytes) -> str:
        return texts.get("next", "")

    omni = FakeOmni(transcripts=transcript, reply=lambda messages: texts.get("reply", "Okay."))
    url = await omni.start()
    engine = TTSEngine(EngineConfig(model=str(build_tiny_checkpoint(workdir / "tiny")), max_streams=4,
                                    frame_cap=FrameCapConfig(base_frames=6, frames_per_text_token=2),
                                    scheduler=SchedulerConfig(max_lead_s=1.0)))
    vad = silero.VAD.load(min_speech_duration=0.05, min_silence_duration=0.3)
    try:
        async with Conversation(engine, agent_config(url, workdir / "traces"), vad) as conv:
            for i in range(turns):
                barge = i % 2 == 1
                texts["next"] = UTTERANCES[i % len(UTTERANCES)]
                texts["reply"] = LONG_REPLY if barge else "Sure, here is a short answer."
                done_before = len(conv.turns)
                played_before = conv.speaker.frames_played
                conv.mic.append(clips[i % len(clips)], gap_s=0.4)
                if barge:  # cut in once the agent has been speaking for ~0.5 s; that reply is short
                    await conv.wait_for(lambda p=played_before: conv.speaker.frames_played > p + 25, 30, "agent speech")
                    texts["next"], texts["reply"] = "Wait stop I have another question", "Go ahead."
                    conv.mic.schedule(clips[3], at_s=conv.mic.position_s + 0.05)
                # a barge-in turn leaves two trace lines: the cut reply and the interruption's own turn
                await conv.wait_turns(done_before + (2 if barge else 1), timeout=40)
                await conv.wait_for(lambda: not conv.speaker.is_playing, 30, "silence")
                print(f"turn {i + 1}/{turns} done ({'barge-in' if barge else 'normal'})", file=sys.stderr)
            records = list(conv.turns)
            trace_path = str(conv.pipeline.tracer.writer.path)
    finally:
        engine.close()
        await omni.stop()
    overhead = [r["pipeline_overhead_ms"] for r in records if r["pipeline_overhead_ms"] is not None]
    cancel = [r["cancel_to_silence_ms"] for r in records if r["interrupted"] and r["cancel_to_silence_ms"] is not None]
    v2v = [r["voice_to_voice_ms"] for r in records if r["voice_to_voice_ms"] is not None]
    # percentiles as in every report: agent/observe/trace_stats.py's (linear between the closest ranks)
    over, cut, heard = stage_stats(overhead), stage_stats(cancel), stage_stats(v2v)
    return {
        "turns": len(records), "errors": sum(1 for r in records if r["error"]),
        "interrupted_turns": sum(1 for r in records if r["interrupted"]),
        "overhead_ms_p50": over["p50"], "overhead_ms_p95": over["p95"],
        "cancel_to_silence_ms_p50": cut["p50"], "cancel_to_silence_ms_p95": cut["p95"],
        "voice_to_voice_ms_p50": heard["p50"], "voice_to_voice_ms_p95": heard["p95"],
        "voice_to_voice_ms_mean": round(statistics.fmean(v2v), 2) if v2v else None,
        "traces": trace_path, "machine": "cpu", "torch_threads": torch.get_num_threads(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=10, help="user utterances (every other one is barged in)")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--workdir", help="keep traces and audio here (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    report = asyncio.run(run(args.turns, workdir))
    report["wall_s"] = round(time.monotonic() - start, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
