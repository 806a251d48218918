"""The talker's forward pass on a preallocated KV cache, for any set of stream slots.

One function serves prefill (T prompt tokens of one stream) and the per-frame step (T=1 for B
streams at different positions). Keys/values are written at (slot, position) and attention reads
the first `kv_len` positions of each row's slot under a position mask, so shapes depend only on
(B, T, kv_len): that is what lets the CUDA-graph runner capture the step per batch bucket. The
weights are the checkpoint's own modules; only the cache handling is the engine's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb


class TalkerKVCache:
    """K/V for every talker layer: [layers, slots, kv_heads, max_context, head_dim] each."""

    def __init__(self, config: Any, max_slots: int, max_context: int, device: torch.device, dtype: torch.dtype):
        shape = (config.num_hidden_layers, max_slots, config.num_key_value_heads, max_context, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_context = max_context

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


def _attention(layer: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope: dict,
               k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor,
               kv_len: int) -> torch.Tensor:
    attn = layer.self_attn
    B, T, _ = hidden.shape
    shape = (B, T, -1, attn.head_dim)
    q = attn.q_norm(attn.q_proj(hidden).view(shape)).transpose(1, 2)  # [B, H, T, hd]
    k = attn.k_norm(attn.k_proj(hidden).view(shape)).transpose(1, 2)  # [B, kvH, T, hd]
    v = attn.v_proj(hidden).view(shape).transpose(1, 2)
    q, k = apply_multimodal_rotary_pos_emb(q, k, cos, sin, rope["mrope_section"], rope["interleaved"])
    # write this step's keys/values at (slot, position): k_cache[slot, :, pos] <- [B, T, kvH, hd]
    k_cache[slots[:, None], :, positions] = k.transpose(1, 2)
    v_cache[slots[:, None], :, positions] = v.transpose(1, 2)
    keys = k_cache[:, :, :kv_len].index_select(0, slots)  # [B, kvH, kv_len, hd]
    values = v_cache[:, :, :kv_len].index_select(0, slots)
    key_pos = torch.arange(kv_len, device=hidden.device)
    mask = key_pos[None, None, None, :] <= positions[:, None, :, None]  # [B, 1, T, kv_len]
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling, enable_gqa=True)
    return attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))


def talker_forward(talker: Any, cache: TalkerKVCache, embeds: torch.Tensor, positions: torch.Tensor,
                   slots: torch.Tensor, kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the talker; return (last hidden state [B, D], codec logits of the last token [B, V] fp32).

    embeds: [B, T, D]; positions: [B, T] absolute positions; slots: [B]; kv_len: static bound with
    kv_len > max(positions).
    """
    model = talker.model
    rope = talker.config.rope_scaling
    # text/codec input: the three MRoPE sections share one position, as in the package
    cos, sin = model.rotary_emb(embeds, positions[None].expand(3, -1, -1))
    hidden = embeds
    for i, layer in enumerate(model.layers):
        residual = hidden
        hidden = _attention(layer, layer.input_layernorm(hidden), cos, sin, rope,
                            cache.k[i], cache.v[i], slots, positions, kv_len)
        hidden = residual + hidden
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    last = model.norm(hidden)[:, -1]  # [B, D]
    return last, talker.codec_head(last).float()
