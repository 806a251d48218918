"""Whatever text one stream is given - lone surrogates, control characters, the model's own special
tokens, emoji, right-to-left marks - in whatever chunking, that stream either speaks or fails with a
clear error; the engine thread never dies of it, and the next stream speaks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.observe.engine_watch import EXIT_ENGINE_DEAD
from tts_engine import EngineClosed, EngineConfig, StreamError, TTSEngine, TTSEngineError
from tts_engine.text_clean import clean_text

NASTY = ["\ud800", "\udfff", "\ud83d", "\x00", "\x1b[31m", "\x7f", "\x85", "<|im_start|>", "<|im_end|>",
         "<tts_pad>", "<tts_text_bos>", "\u202e", "\u200d", "\ufeff", "\ufffe", "👩‍👩‍👧", "e\u0301", "مرحبا",
         "\n", "\t", " ", "."]
pieces = st.one_of(st.sampled_from(NASTY), st.text(max_size=6),
                   st.text(st.characters(codec=None, exclude_categories=()), max_size=4))


def speak(engine: TTSEngine, chunks: list[str]) -> int:
    """Packets the stream produced; raises the stream's own error if it failed."""
    stream = engine.open_stream(speaker="ryan", language="english", max_frames=2)
    try:
        for chunk in chunks:
            stream.push_text(chunk)
        stream.end_text()
        return len(list(stream))
    finally:
        stream.cancel(wait=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(pieces, max_size=8))
def test_any_text_in_any_chunking_fails_at_most_its_own_stream(greedy_engine, chunks):
    try:
        packets = speak(greedy_engine, chunks)
    except TTSEngineError as exc:  # empty after cleaning, say: a clear error of the engine's own kinds
        assert not isinstance(exc, EngineClosed), exc
    else:
        assert packets > 0
    assert greedy_engine.running
    assert speak(greedy_engine, ["Still speaking."]) == 8  # the next stream is served as before


@pytest.mark.parametrize("raw,clean", [("a\ud800b", "ab"), ("x\x00y\x1bz", "x y z"), ("tab\tand\nline", "tab\tand\nline"),
                                       ("<|im_start|>", "<|im_start|>"), ("emoji 👩‍👩‍👧 ok", "emoji 👩‍👩‍👧 ok"),
                                       ("\u202eabc", "\u202eabc"), ("del\x7fc1\x85", "del c1 ")])
def test_clean_text_drops_what_cannot_be_encoded_and_blanks_controls(raw, clean):
    assert clean_text(raw) == clean
    clean_text(raw).encode("utf-8")  # what the tokenizer needs


def test_special_token_strings_are_read_as_text(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=3)
    stream.push_text("say <|im_start|> aloud")
    stream.end_text()
    assert len(list(stream)) > 0
    # decoding skips special tokens: the string survives only if it went in as plain text
    assert "<|im_start|>" in stream.spoken_text(1000)


def test_a_dead_engine_says_so_and_refuses_work(tiny_checkpoint, monkeypatch):
    engine = TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=2))
    try:
        stream = engine.open_stream(speaker="ryan", language="english", max_frames=50)
        stream.push_text("Hello there.")

        def crash(*_a, **_k):
            raise SystemError("simulated engine-thread crash")
        monkeypatch.setattr(engine.executor, "step", crash)
        engine._wake()
        with pytest.raises((StreamError, EngineClosed)):
            for _ in stream:
                pass
        assert not engine.running
        with pytest.raises(EngineClosed, match="simulated engine-thread crash"):
            engine.open_stream(speaker="ryan", language="english")
    finally:
        engine.close()


RESTART = Path(__file__).resolve().parents[1] / "scripts" / "lib" / "restart_on_exit.sh"


def supervised(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(RESTART), str(EXIT_ENGINE_DEAD), "--", "bash", "-c", script],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "RESTART_DELAY_S": "0", **env})


def test_the_supervisor_restarts_an_agent_whose_engine_died(tmp_path):
    """start_all.sh runs the agent under restart_on_exit.sh: exit 70 (engine dead) starts it again."""
    done = supervised(f"[ -f ran ] && echo second life && exit 0; touch ran; exit {EXIT_ENGINE_DEAD}", tmp_path)
    assert done.returncode == 0 and "second life" in done.stdout, done
    assert "restarting it (1 of 5" in done.stderr


def test_the_supervisor_passes_other_exits_through_and_gives_up_on_a_loop(tmp_path):
    assert supervised("exit 3", tmp_path).returncode == 3  # a configuration error is not retried
    looping = supervised(f"exit {EXIT_ENGINE_DEAD}", tmp_path, MAX_RESTARTS="2")
    assert looping.returncode == EXIT_ENGINE_DEAD and "giving up" in looping.stderr, looping
    assert looping.stderr.count("restarting it") == 2
