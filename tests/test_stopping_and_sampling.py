"""EOS / min-token rules against the package, and the seeded device-side sampler."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from reference import package_codes
from safetensors.torch import load_file, save_file
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from tts_engine import EngineConfig, SamplingConfig, TTSEngine
from tts_engine.sampling import choose_tokens, counter_uniform, filter_top_k_top_p

EOS = 2150


def _checkpoint_with_eos_row(src: str, dst, scale: float) -> str:
    """Copy of the tiny checkpoint whose EOS logit competes with the codebook ids (random weights
    otherwise never stop); `scale` sets how soon EOS wins."""
    shutil.copytree(src, dst)
    weights = load_file(f"{dst}/model.safetensors")
    head = weights["talker.codec_head.weight"]
    noise = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(1))
    head[EOS] = noise * head[:2048].std() * scale
    save_file(weights, f"{dst}/model.safetensors", metadata={"format": "pt"})
    return str(dst)


@pytest.fixture(scope="module")
def eos_checkpoint(tiny_checkpoint, tmp_path_factory):
    return _checkpoint_with_eos_row(tiny_checkpoint, tmp_path_factory.mktemp("eos") / "ckpt", scale=3.0)


@pytest.mark.parametrize("text,language", [("Hello world, this is a tiny test.", "english"),
                                           ("你好，欢迎使用语音合成服务。", "chinese"),
                                           ("The quick brown fox.", "english")])
def test_eos_stops_where_the_package_stops(eos_checkpoint, text, language):
    from qwen_tts import Qwen3TTSModel

    reference = Qwen3TTSModel.from_pretrained(eos_checkpoint, local_files_only=True)
    expected = package_codes(reference, text, "ryan", language, 200, non_streaming_mode=False)
    assert 2 < expected.shape[0] < 200, "the modified checkpoint must stop by EOS"
    with TTSEngine(EngineConfig(model=eos_checkpoint, do_sample=False, max_streams=2)) as engine:
        stream = engine.open_stream(speaker="ryan", language=language, max_frames=200)
        stream.push_text(text)
        stream.end_text()
        packets = list(stream)
    np.testing.assert_array_equal(stream.codes, expected)
    assert stream.stats.finish_reason == "eos"
    assert len(packets) == 4 * expected.shape[0]


def test_min_new_tokens_holds_back_an_overwhelming_eos(tiny_checkpoint, tmp_path):
    from qwen_tts import Qwen3TTSModel

    ckpt = _checkpoint_with_eos_row(tiny_checkpoint, tmp_path / "ckpt", scale=200.0)
    reference = Qwen3TTSModel.from_pretrained(ckpt, local_files_only=True)
    expected = package_codes(reference, "Stop right away.", "vivian", "english", 50, non_streaming_mode=False)
    with TTSEngine(EngineConfig(model=ckpt, do_sample=False, max_streams=1)) as engine:
        stream = engine.open_stream(speaker="vivian", language="english", max_frames=50)
        stream.push_text("Stop right away.")
        stream.end_text()
        list(stream)
    assert expected.shape[0] == 2  # min_new_tokens=2: two tokens before EOS may win -> 2 frames
    np.testing.assert_array_equal(stream.codes, expected)


def _speak(engine, text, seed, frames=12):
    stream = engine.open_stream(speaker="ryan", language="english", max_frames=frames, seed=seed)
    stream.push_text(text)
    stream.end_text()
    return np.concatenate([p.pcm for p in stream]), stream.codes


def test_seeded_sampling_is_reproducible_and_seed_dependent(tiny_checkpoint):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, do_sample=True, max_streams=4)) as engine:
        a_pcm, a_codes = _speak(engine, "Sampling with a seed.", seed=7)
        b_pcm, b_codes = _speak(engine, "Sampling with a seed.", seed=7)
        _, c_codes = _speak(engine, "Sampling with a seed.", seed=8)
    np.testing.assert_array_equal(a_codes, b_codes)
    np.testing.assert_array_equal(a_pcm, b_pcm)
    assert (a_codes != c_codes).any()


def test_top_k_top_p_match_transformers_warpers():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=gen) * 3
    for top_k, top_p in [(50, 1.0), (0, 0.8), (20, 0.5), (300, 0.95), (1, 1.0)]:
        expected = logits.clone()
        if top_k > 0:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1.0:
            expected = TopPLogitsWarper(top_p)(None, expected)
        assert torch.equal(filter_top_k_top_p(logits, top_k, top_p), expected)


def test_counter_uniform_is_uniform_and_counter_dependent():
    seeds = torch.zeros(1000, dtype=torch.long)
    u = counter_uniform(seeds, torch.arange(1000), salt=0, n=64)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    assert not torch.equal(u[0], u[1])
    again = counter_uniform(seeds, torch.arange(1000), salt=0, n=64)
    assert torch.equal(u, again)
    assert not torch.equal(u, counter_uniform(seeds, torch.arange(1000), salt=1, n=64))


def test_sampled_frequencies_follow_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, -1)
    tokens = choose_tokens(logits, True, 1.0, 0, 1.0, torch.zeros(20000, dtype=torch.long),
                           torch.arange(20000), salt=0)
    freq = torch.bincount(tokens, minlength=4).float() / 20000
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.02)


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)
