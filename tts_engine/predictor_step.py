"""The code predictor ("MTP"): codebooks 1-15 of a frame from the talker's hidden state and code 0.

The whole 15-step loop runs on the device with a fixed 16-position KV buffer and device-side token
choice, so it has no host synchronisation and static shapes (one CUDA graph per batch bucket).
Step i embeds code i with codec_embedding[i-1] and scores codebook i+1 with lm_head[i], exactly as
the package's nested generate does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from qwen_tts.core.models.modeling_qwen3_tts import apply_rotary_pos_emb

from .config import SamplingConfig
from .sampling import choose_tokens


def _layer(layer: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           k_buf: torch.Tensor, v_buf: torch.Tensor, start: int) -> torch.Tensor:
    attn = layer.self_attn
    B, T, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    shape = (B, T, -1, attn.head_dim)
    q = attn.q_norm(attn.q_proj(x).view(shape)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(shape)).transpose(1, 2)
    v = attn.v_proj(x).view(shape).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k_buf[:, :, start:start + T] = k
    v_buf[:, :, start:start + T] = v
    end = start + T
    if T > 1:  # the 2-token prefill attends causally within itself
        out = F.scaled_dot_product_attention(q, k_buf[:, :, :end], v_buf[:, :, :end], is_causal=True,
                                             scale=attn.scaling, enable_gqa=True)
    else:
        out = F.scaled_dot_product_attention(q, k_buf[:, :, :end], v_buf[:, :, :end],
                                             scale=attn.scaling, enable_gqa=True)
    hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


# (codebook index 1..15, its logits [B, 2048] fp32) -> the codes [B] fed to the next step
TokenChoice = Callable[[int, torch.Tensor], torch.Tensor]


def predict_codebooks(talker: Any, past_hidden: torch.Tensor, code0: torch.Tensor, rules: SamplingConfig,
                      seed: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (codes [B, 16], next-input embedding sum [B, D]) for one frame of B streams.

    past_hidden: [B, D] talker hidden state that produced code0; code0: [B] codebook-0 ids;
    seed, counter: [B] int64 for the seeded sampler.
    """

    def sample(codebook: int, logits: torch.Tensor) -> torch.Tensor:
        return choose_tokens(logits, rules.subtalker_do_sample, rules.subtalker_temperature,
                             rules.subtalker_top_k, rules.subtalker_top_p, seed, counter, salt=codebook)

    return run_code_predictor(talker, past_hidden, code0, sample)


def run_code_predictor(talker: Any, past_hidden: torch.Tensor, code0: torch.Tensor,
                       choose: TokenChoice) -> tuple[torch.Tensor, torch.Tensor]:
    """The 15-step loop with the token choice left to `choose`: sampling in the engine, the given
    codes under teacher forcing (which is how a check reads the logits of this very loop)."""
    predictor = talker.code_predictor
    model = predictor.model
    groups = talker.config.num_code_groups
    cfg = model.config
    B = code0.shape[0]
    first = talker.get_input_embeddings()(code0)  # [B, D]
    buf_shape = (B, cfg.num_key_value_heads, groups, cfg.head_dim)
    k_bufs = [past_hidden.new_zeros(buf_shape) for _ in model.layers]
    v_bufs = [past_hidden.new_zeros(buf_shape) for _ in model.layers]
    positions = torch.arange(groups, device=code0.device)[None].expand(B, -1)  # [B, 16]
    cos_all, sin_all = model.rotary_emb(first, positions)

    hidden = predictor.small_to_mtp_projection(torch.stack((past_hidden, first), dim=1))  # [B, 2, Dp]
    start = 0
    codes = [code0]
    embeds = [first]
    for step in range(groups - 1):
        T = hidden.shape[1]
        cos, sin = cos_all[:, start:start + T], sin_all[:, start:start + T]
        for i, layer in enumerate(model.layers):
            hidden = _layer(layer, hidden, cos, sin, k_bufs[i], v_bufs[i], start)
        start += T
        logits = predictor.lm_head[step](model.norm(hidden[:, -1])).float()  # [B, 2048]
        code = choose(step + 1, logits)
        codes.append(code)
        embed = model.codec_embedding[step](code)  # [B, D]
        embeds.append(embed)
        hidden = predictor.small_to_mtp_projection(embed[:, None])
    # the package sums the 16 codebook embeddings of the frame in this order
    return torch.stack(codes, dim=1), torch.stack(embeds, dim=1).sum(1)
