"""Greedy fp32 on the tiny checkpoint: the engine's own loop reproduces the package's codec frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import package_codes

CASES = [
    ("Hello world, this is a tiny test.", "ryan", "english"),
    ("The quick brown fox jumps over the lazy dog. 0123456789", "vivian", "english"),
    ("How can I help you today?", "Ryan", "Auto"),
    ("你好，欢迎使用语音合成服务。", "vivian", "chinese"),
    ("今天天气很好。", "ryan", "chinese"),
]
FRAMES = 24


@pytest.mark.parametrize("text,speaker,language", CASES)
def test_stream_matches_package_dual_track_mode(greedy_engine, reference_model, text, speaker, language):
    stream = greedy_engine.open_stream(speaker=speaker, language=language, max_frames=FRAMES)
    stream.push_text(text)
    stream.end_text()
    packets = list(stream)
    expected = package_codes(reference_model, text, speaker.lower(), language.lower(), FRAMES,
                             non_streaming_mode=False)
    assert stream.codes.shape == (FRAMES, 16)
    np.testing.assert_array_equal(stream.codes, expected)
    assert len(packets) == 4 * FRAMES


@pytest.mark.parametrize("text,speaker,language", CASES[::2])
def test_synthesize_matches_package_non_streaming_mode(greedy_engine, reference_model, text, speaker, language):
    wav, rate = greedy_engine.synthesize(text, speaker=speaker, language=language, max_frames=FRAMES)
    expected = package_codes(reference_model, text, speaker.lower(), language.lower(), FRAMES,
                             non_streaming_mode=True)
    assert rate == 24000
    assert wav.dtype == np.float32 and wav.shape == (FRAMES * 1920,)
    # the package decoder's whole-utterance decode of the reference codes: equal audio means equal
    # codes (any differing code changes the waveform far beyond 1e-4) and an exact streaming decoder
    decoder = reference_model.model.speech_tokenizer.model.decoder
    with torch.inference_mode():
        reference_wav = decoder(torch.from_numpy(expected).T[None]).squeeze().numpy()
    assert np.abs(wav - reference_wav).max() <= 1e-4


@pytest.mark.parametrize("chunking", ["words", "characters", "all-at-once"])
def test_chunked_text_gives_identical_codes(greedy_engine, chunking):
    text = "Sure, let me think about that for a second. The weather is nice today!"
    if chunking == "words":
        chunks = [w + " " for w in text.split(" ")]
    elif chunking == "characters":
        chunks = list(text)
    else:
        chunks = [text]
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=40)
    for chunk in chunks:
        stream.push_text(chunk)
    stream.end_text()
    list(stream)
    whole = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=40)
    whole.push_text(text)
    whole.end_text()
    list(whole)
    np.testing.assert_array_equal(stream.codes, whole.codes)
