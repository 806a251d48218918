"""Adaptive endpointing with the local Smart Turn model (agent/session/turn_end.py): the model itself on
real speech, the audio it is given, the configuration, and a conversation that ends turns with it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from livekit import rtc
from livekit.agents import vad as lk_vad

from agent.config import DEFAULT_TURN_MODEL, AgentConfig, TurnConfig
from agent.session.pipeline import load_vad
from agent.session.turn_end import MODEL_RATE, MODEL_WINDOW_S, SmartTurnModel, TurnAudio
from testing.fake_omni import FakeOmni
from testing.harness import Conversation, agent_config, scripted, speech_wav

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def turn_model() -> SmartTurnModel:
    """The model scripts/test.sh installs (installed here when missing: a 12 MB download)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install_turn_model.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return SmartTurnModel(DEFAULT_TURN_MODEL)


def _speech(text: str, tmp_path: Path) -> np.ndarray:
    """espeak-ng speech at 16 kHz as float, with the 0.2 s of silence the VAD waits before asking."""
    pcm, _ = sf.read(str(speech_wav(text, tmp_path / "s.wav", rate=MODEL_RATE)), dtype="float32")
    last = np.flatnonzero(np.abs(pcm) > 0.01)[-1]
    return np.concatenate([pcm[:last], np.zeros(int(0.2 * MODEL_RATE), np.float32)])


def test_the_model_hears_a_finished_and_an_unfinished_sentence(turn_model, tmp_path):
    finished = turn_model(_speech("What is the weather going to be like tomorrow", tmp_path))
    unfinished = turn_model(_speech("Tell me a short story about a", tmp_path))
    assert finished > 0.5 > unfinished, (finished, unfinished)
    assert turn_model(np.zeros(MODEL_RATE, np.float32)) == pytest.approx(turn_model(np.zeros(10, np.float32)))


def _window(pcm: np.ndarray, kind=lk_vad.VADEventType.INFERENCE_DONE) -> lk_vad.VADEvent:
    frame = rtc.AudioFrame(data=pcm.tobytes(), sample_rate=MODEL_RATE, num_channels=1, samples_per_channel=len(pcm))
    return lk_vad.VADEvent(type=kind, samples_index=0, timestamp=0.0, speech_duration=0.0, silence_duration=0.0,
                           frames=[frame])


def test_turn_audio_keeps_the_last_window_as_it_was_at_the_end_of_speech():
    audio = TurnAudio()
    assert audio.at_end_of_speech() is None
    chunk = MODEL_RATE // 2  # half a second per event
    for k in range(2 * MODEL_WINDOW_S + 3):
        audio.on_vad_event(_window(np.full(chunk, k, np.int16)))
    audio.on_vad_event(_window(np.zeros(0, np.int16), lk_vad.VADEventType.END_OF_SPEECH))
    audio.on_vad_event(_window(np.full(chunk, 99, np.int16)))  # after the end: not what is judged
    heard = audio.at_end_of_speech()
    assert heard is not None and MODEL_WINDOW_S * MODEL_RATE <= len(heard) < (MODEL_WINDOW_S + 0.5) * MODEL_RATE
    assert heard[-1] * 32768 == pytest.approx(2 * MODEL_WINDOW_S + 2)  # the newest window before the end


def test_end_of_turn_setting_comes_from_the_environment(tmp_path):
    keys = {"OMNI_BASE_URL": "http://127.0.0.1:9/v1"}
    model = tmp_path / "model.onnx"
    assert AgentConfig.from_env({**keys, "AGENT_TURN_MODEL": str(model)}).turn.end_of_turn == "vad"  # auto, none
    model.write_bytes(b"x")
    turn = AgentConfig.from_env({**keys, "AGENT_TURN_MODEL": str(model)}).turn
    assert turn.end_of_turn == "smart_turn" and turn.smart_turn_model == str(model)
    assert AgentConfig.from_env({**keys, "AGENT_TURN_MODEL": str(model), "AGENT_END_OF_TURN": "vad"}
                                ).turn.end_of_turn == "vad"
    with pytest.raises(ValueError, match="install_turn_model"):
        AgentConfig.from_env({**keys, "AGENT_TURN_MODEL": str(tmp_path / "missing.onnx"),
                              "AGENT_END_OF_TURN": "smart_turn"})
    with pytest.raises(ValueError, match="AGENT_END_OF_TURN"):
        AgentConfig.from_env({**keys, "AGENT_END_OF_TURN": "sometimes"})


async def test_a_finished_sentence_is_answered_after_a_short_pause(engine, turn_model, tmp_path):
    omni = FakeOmni(transcripts=scripted("What is the weather going to be like tomorrow"),
                    reply=lambda messages: "Sunny.")
    url = await omni.start()
    cfg = agent_config(url, tmp_path)
    cfg = replace(cfg, turn=TurnConfig(end_of_turn="smart_turn", smart_turn_model=str(turn_model.path)))
    clip = speech_wav("What is the weather going to be like tomorrow", tmp_path / "w.wav")
    try:
        async with Conversation(engine, cfg, load_vad(cfg), turn_model=turn_model) as conv:
            conv.mic.schedule(clip, at_s=0.3)
            await conv.wait_turns(1, timeout=30)
            (rec,) = conv.turns
            assert rec["end_of_turn_probability"] > cfg.turn.smart_turn_threshold
            # the VAD ended the segment after its 0.2 s (VAD-only would wait cfg.vad.min_silence_s, 0.3 s here)
            silence_s = rec["clock"]["vad_end"] - rec["clock"]["speech_end"]
            assert 0.2 * 0.95 <= silence_s < cfg.vad.min_silence_s
            assert rec["endpointing_ms"] >= silence_s * 1000  # and the verdict's short wait comes on top
            assert rec["agent_text"] == "Sunny." and rec["error"] is None
    finally:
        await omni.stop()
