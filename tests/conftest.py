"""Shared fixtures: one tiny checkpoint per test run, single-threaded torch, offline hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from livekit.plugins import silero  # noqa: E402  (plugins register on the main thread, at import)

# Threads on a loaded 2-core box slow small ops 100x: every test runs single-threaded.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    from tts_engine.tiny_checkpoint import build_tiny_checkpoint

    return str(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen3-tts")))


@pytest.fixture(scope="session")
def reference_model(tiny_checkpoint):
    """The qwen-tts package's own model on the tiny checkpoint: the ground truth."""
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(tiny_checkpoint, local_files_only=True)


@pytest.fixture(scope="session")
def greedy_engine(tiny_checkpoint):
    from tts_engine import EngineConfig, SchedulerConfig, TTSEngine

    engine = TTSEngine(EngineConfig(model=tiny_checkpoint, do_sample=False, max_streams=8,
                                    scheduler=SchedulerConfig(max_lead_s=None)))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    """The agent tests' engine (one per test module): short replies, because the tiny model never
    says EOS and the frame cap sets how long each reply plays."""
    from tts_engine import EngineConfig, FrameCapConfig, SchedulerConfig, TTSEngine

    cfg = EngineConfig(model=tiny_checkpoint, max_streams=8, scheduler=SchedulerConfig(max_lead_s=1.0),
                       frame_cap=FrameCapConfig(base_frames=6, frames_per_text_token=2))
    with TTSEngine(cfg) as e:
        yield e


@pytest.fixture(scope="module")
def vad():
    """Silero as the agent tests configure it: quick start and end of speech."""
    return silero.VAD.load(min_speech_duration=0.05, min_silence_duration=0.3)


@pytest.fixture(scope="session")
def cpu_backends_venv(tmp_path_factory) -> str:
    """.venv-backends with the CPU stand-ins (Whisper base, SmolLM2 on llama.cpp), installed by
    scripts/backends/install.sh when missing: the first time builds llama.cpp (~5 minutes on 2 cores),
    later calls return at once. Its path (BACKENDS_VENV, default <repo>/.venv-backends)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    venv = os.environ.get("BACKENDS_VENV", str(root / ".venv-backends"))
    log = tmp_path_factory.mktemp("backends-install") / "install.log"
    with log.open("wb") as out:
        done = subprocess.run(["bash", str(root / "scripts" / "backends" / "install.sh")], stdout=out,
                              stderr=subprocess.STDOUT, cwd=root, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"scripts/backends/install.sh failed (exit {done.returncode}):\n{log.read_text()[-4000:]}")
    return venv


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory):
    """One real LiveKit server for the session (scripts/install_livekit.sh builds it when missing)."""
    from livekit_fixtures import LiveKitServer

    server = LiveKitServer(tmp_path_factory.mktemp("livekit")).start()
    yield server
    server.stop()
