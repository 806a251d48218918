"""Qwen3-TTS-12Hz architectures: the released sizes and the project's tiny test size.

The full sizes mirror the public `config.json` of the released CustomVoice checkpoints; they are
used to build random-weight models for benchmarks (speed does not depend on weight values once the
output length is fixed). The tiny size keeps the REAL codec token-id layout (specials, language and
speaker ids) with toy widths so tests exercise the real code paths in seconds.
"""

from __future__ import annotations

import copy
from typing import Any

from .frames import CODEBOOKS, FRAME_RATE_HZ

# Real codec-side token ids (talker vocabulary 3072): 0-2047 codebook 0, specials from 2148.
CODEC_SPECIAL_IDS = dict(
    codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150, codec_think_id=2154,
    codec_nothink_id=2155, codec_think_bos_id=2156, codec_think_eos_id=2157,
)

FULL_LANGUAGE_IDS = {
    "chinese": 2055, "english": 2050, "german": 2053, "italian": 2070, "portuguese": 2071,
    "spanish": 2054, "japanese": 2058, "korean": 2064, "french": 2061, "russian": 2069,
    "beijing_dialect": 2074, "sichuan_dialect": 2062,
}
FULL_SPEAKER_IDS = {
    "serena": 3066, "vivian": 3065, "uncle_fu": 3010, "ryan": 3061, "aiden": 2861,
    "ono_anna": 2873, "sohee": 2864, "eric": 2875, "dylan": 2878,
}
FULL_SPEAKER_DIALECTS: dict[str, Any] = {name: False for name in FULL_SPEAKER_IDS}
FULL_SPEAKER_DIALECTS.update(eric="sichuan_dialect", dylan="beijing_dialect")

# Real Qwen2 text-vocabulary special ids (the released checkpoints pad the vocabulary to 151936).
FULL_TEXT_SPECIAL_IDS = dict(
    im_start_token_id=151644, im_end_token_id=151645, tts_pad_token_id=151671,
    tts_bos_token_id=151672, tts_eos_token_id=151673,
)


def _talker(hidden: int, intermediate: int, text_hidden: int) -> dict[str, Any]:
    return dict(
        vocab_size=3072, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
        text_vocab_size=151936, text_hidden_size=text_hidden, num_code_groups=CODEBOOKS,
        rope_theta=1_000_000, max_position_embeddings=32768, position_id_per_seconds=13,
        rms_norm_eps=1e-6,
        rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "interleaved": True},
        codec_language_id=dict(FULL_LANGUAGE_IDS), spk_id=dict(FULL_SPEAKER_IDS),
        spk_is_dialect=dict(FULL_SPEAKER_DIALECTS),
        code_predictor_config=dict(
            vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128,
            num_code_groups=CODEBOOKS, rope_theta=1_000_000, max_position_embeddings=65536,
            rms_norm_eps=1e-6,
        ),
        **CODEC_SPECIAL_IDS,
    )


# speech_tokenizer/config.json decoder_config of Qwen3-TTS-Tokenizer-12Hz
FULL_DECODER = dict(
    attention_bias=False, latent_dim=1024, codebook_dim=512, codebook_size=2048, decoder_dim=1536,
    hidden_act="silu", hidden_size=512, intermediate_size=1024, layer_scale_initial_scale=0.01,
    max_position_embeddings=8000, head_dim=64, num_attention_heads=16, num_hidden_layers=8,
    num_key_value_heads=16, num_quantizers=CODEBOOKS, rms_norm_eps=1e-5, rope_theta=10000,
    sliding_window=72, upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
)

TINY_DECODER = dict(
    codebook_size=2048, codebook_dim=16, hidden_size=32, latent_dim=32, num_attention_heads=2,
    num_key_value_heads=2, head_dim=16, intermediate_size=64, num_hidden_layers=2,
    num_quantizers=CODEBOOKS, sliding_window=72, decoder_dim=32,
    upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
)

# A small Mimi encoder: only decoding is used by the engine, but the tokenizer model has both halves.
SMALL_ENCODER = dict(
    hidden_size=32, num_filters=4, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, intermediate_size=64, codebook_size=2048, codebook_dim=16,
    vector_quantization_hidden_dimension=16, num_quantizers=32, upsample_groups=32,
    upsampling_ratios=[8, 6, 5, 4], frame_rate=FRAME_RATE_HZ,
)

TINY_TALKER = dict(
    vocab_size=3072, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_code_groups=CODEBOOKS,
    text_hidden_size=64, rope_theta=1_000_000, max_position_embeddings=32768,
    position_id_per_seconds=13,
    # the three MRoPE sections must sum to head_dim / 2
    rope_scaling={"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
    codec_language_id={"chinese": 2055, "english": 2050},
    spk_id={"ryan": 3061, "vivian": 3065}, spk_is_dialect={"ryan": False, "vivian": False},
    code_predictor_config=dict(
        vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_code_groups=CODEBOOKS, rope_theta=1_000_000, max_position_embeddings=65536,
    ),
    **CODEC_SPECIAL_IDS,
)

TALKERS = {
    "0.6b": _talker(hidden=1024, intermediate=3072, text_hidden=2048),
    "1.7b": _talker(hidden=2048, intermediate=6144, text_hidden=2048),
}
MODEL_SIZE_TAG = {"0.6b": "0b6", "1.7b": "1b7"}


def talker_config(size: str) -> dict[str, Any]:
    """A fresh copy of the talker configuration of a released size ('0.6b' or '1.7b')."""
    if size not in TALKERS:
        raise ValueError(f"unknown model size {size!r}; known: {sorted(TALKERS)}")
    return copy.deepcopy(TALKERS[size])
