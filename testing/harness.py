"""Headless harness: a real AgentSession with real Silero and the real engine, WAV files played in
real time as the microphone, a recording speaker. Tests, the pipeline benchmark and the soak use it
(with the fake Omni server, testing/fake_omni.py, or a real Omni endpoint)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from agent.config import AgentConfig, TurnConfig, VADConfig
from agent.plugins.omni_config import LLMConfig, OmniConfig
from agent.session.pipeline import VoicePipeline

from .audio_input import WavAudioInput
from .recording import RecordingAudioOutput


def speech_wav(text: str, path: Path, voice: str = "en-us", speed: int = 165, rate: int = 16000) -> Path:
    """Real speech from espeak-ng, mono 16-bit at `rate`."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def agent_config(base_url: str, traces_dir: Path, timeout_s: float = 3.0, **overrides) -> AgentConfig:
    """Settings for headless runs: short VAD silence, short replies."""
    cfg = AgentConfig(omni=OmniConfig(base_url=base_url, request_timeout_s=timeout_s),
                      llm=LLMConfig(max_tokens=60), vad=VADConfig(min_speech_s=0.05, min_silence_s=0.3),
                      turn=TurnConfig(endpointing_min_delay_s=0.05), traces_dir=str(traces_dir))
    return replace(cfg, **overrides)


class Conversation:
    """A running pipeline with a scripted microphone and a recording speaker."""

    def __init__(self, engine, cfg: AgentConfig, vad, turn_model=None) -> None:
        self.mic = WavAudioInput(sample_rate=16000)
        self.speaker = RecordingAudioOutput(sample_rate=engine.config.output_sample_rate)
        self.events: list[tuple[float, str, dict]] = []
        self.pipeline = VoicePipeline(engine, cfg, vad, turn_model=turn_model,
                                      on_event=lambda kind, data: self.events.append((time.monotonic(), kind, data)))

    async def __aenter__(self) -> Conversation:
        await self.pipeline.start(audio_in=self.mic, audio_out=self.speaker)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pipeline.aclose()
        self.mic.close()
        await self.speaker.aclose()

    @property
    def turns(self) -> list[dict]:
        return self.pipeline.tracer.records

    def trace_file_records(self) -> list[dict]:
        writer = self.pipeline.tracer.writer
        assert writer is not None
        path = writer.path
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; turns={self.turns}")
            await asyncio.sleep(0.02)

    async def wait_turns(self, n: int, timeout: float = 30.0) -> None:
        await self.wait_for(lambda: len(self.turns) >= n, timeout, f"{n} turn(s)")


def scripted(*texts: str):
    """Transcripts in order, then empty ones: VAD may split an utterance into several segments,
    and an empty transcript makes no turn."""
    remaining = list(texts)
    return lambda wav: remaining.pop(0) if remaining else ""
