"""Clear errors for bad input and unsupported checkpoints; the engine keeps serving afterwards."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tts_engine import (
    EngineConfig,
    InvalidTextError,
    StreamError,
    TTSEngine,
    UnknownLanguageError,
    UnknownSpeakerError,
    UnsupportedModelError,
)
from tts_engine.config import MAX_STREAMS_CPU, MAX_STREAMS_CUDA
from tts_engine.model_loading import load_model


def test_unknown_speaker_lists_valid_ones(greedy_engine):
    with pytest.raises(UnknownSpeakerError, match=r"unknown speaker 'nobody'.*\['ryan', 'vivian'\]"):
        greedy_engine.open_stream(speaker="nobody", language="english")


def test_unknown_language_lists_valid_ones(greedy_engine):
    with pytest.raises(UnknownLanguageError, match=r"'klingon'.*auto.*chinese.*english"):
        greedy_engine.open_stream(speaker="ryan", language="klingon")


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_rejected(greedy_engine, text):
    with pytest.raises(InvalidTextError, match="empty text"):
        greedy_engine.synthesize(text, speaker="ryan", language="english")
    stream = greedy_engine.open_stream(speaker="ryan", language="english")
    stream.push_text(text)
    stream.end_text()
    with pytest.raises(StreamError, match="empty text"):
        list(stream)
    assert stream.wait_closed(10)


def test_overlong_text_is_rejected(greedy_engine):
    limit = greedy_engine.config.max_text_chars
    with pytest.raises(InvalidTextError, match=f"limit is {limit}"):
        greedy_engine.synthesize("a" * (limit + 1), speaker="ryan", language="english")
    stream = greedy_engine.open_stream(speaker="ryan", language="english")
    stream.push_text("a" * limit)
    with pytest.raises(InvalidTextError, match="longer than"):
        stream.push_text("b")
    with pytest.raises(StreamError):
        list(stream)
    assert stream.wait_closed(10)


def test_push_after_end_and_wrong_types(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=2)
    with pytest.raises(TypeError):
        stream.push_text(b"bytes")  # type: ignore[arg-type]
    stream.push_text("ok.")
    stream.end_text()
    with pytest.raises(InvalidTextError, match="after end_text"):
        stream.push_text("more")
    assert len(list(stream)) == 8


def test_engine_still_serves_after_bad_input(greedy_engine):
    wav, _ = greedy_engine.synthesize("Still working.", speaker="ryan", language="english", max_frames=3)
    assert wav.shape == (3 * 1920,)


def test_missing_folder_error_names_the_fix():
    with pytest.raises(UnsupportedModelError, match="checkpoint folder not found.*tiny_checkpoint"):
        load_model(EngineConfig(model="./no/such/folder"))


def test_unreachable_hub_id_is_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="could not be fetched from the hub"):
        load_model(EngineConfig(model="Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice", local_files_only=True))


@pytest.mark.parametrize("model_type,name", [("base", "Base"), ("voice_design", "VoiceDesign")])
def test_base_and_voice_design_are_named_as_unsupported(tiny_checkpoint, tmp_path, model_type, name):
    folder = tmp_path / model_type
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tts_model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=f"{name}.*not supported yet.*CustomVoice"):
        load_model(EngineConfig(model=str(folder)))


def test_loads_real_checkpoint_layout_through_qwen_tts(tiny_checkpoint):
    loaded = load_model(EngineConfig(model=tiny_checkpoint))
    assert loaded.speakers == ["ryan", "vivian"]
    assert loaded.languages == ["auto", "chinese", "english"]
    assert loaded.is_test_voice
    assert next(loaded.model.parameters()).dtype.is_floating_point
    assert loaded.model.config.talker_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "exactly one"),
    (dict(model="x", random_weights="0.6b"), "exactly one"),
    (dict(random_weights="3b"), "random_weights"),
    (dict(model="x", dtype="float16"), "CUDA"),
    (dict(model="x", quantize="int4"), "quantize"),
    (dict(model="x", quantize="int8", dtype="bfloat16"), "float32"),
    (dict(model="x", quantize="int8", device="cuda"), "CPU"),
    (dict(model="x", output_sample_rate=22050), "output_sample_rate"),
    (dict(model="x", max_streams=-1), "max_streams"),
    (dict(model="x", cuda_graphs=True), "CUDA"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig(**kwargs)


def test_bf16_is_allowed_on_the_cpu_and_quantize_resolves():
    assert EngineConfig(model="x", dtype="bfloat16").torch_dtype == torch.bfloat16
    assert not EngineConfig(model="x", dtype="bfloat16").use_int8  # dynamic int8 takes float32 input
    assert not EngineConfig(model="x", quantize="none").use_int8
    assert EngineConfig(model="x", quantize="int8").use_int8


def test_stream_slots_default_per_device():
    """Every slot holds its talker KV from the start: the CPU gets fewer (RAM, and slower streams)."""
    assert EngineConfig(model="x").max_streams == MAX_STREAMS_CPU < MAX_STREAMS_CUDA
    assert EngineConfig(model="x", device="cuda").max_streams == MAX_STREAMS_CUDA
    assert EngineConfig(model="x", max_streams=3).max_streams == 3
    assert EngineConfig(model="x", max_streams=1).live_reserve == 0  # at least one slot for anyone


def test_context_manager_closes_and_rejects_new_streams(tiny_checkpoint):
    from tts_engine import EngineClosed

    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=1)) as engine:
        pass
    with pytest.raises(EngineClosed):
        engine.open_stream(speaker="ryan", language="english")
