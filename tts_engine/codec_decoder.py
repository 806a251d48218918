"""Stateful, batched, frame-by-frame decoding of Qwen3-TTS 12 Hz codec frames to 24 kHz audio.

The package's speech decoder (`Qwen3TTSTokenizerV2Decoder`) is fully causal: RVQ lookup -> causal
conv k=3 -> 8-layer sliding-window (72) transformer -> causal transposed convs, ConvNeXt blocks,
SnakeBeta residual units -> conv -> clamp. Its own streaming answer (`chunked_decode`) re-decodes
25 frames of left context per chunk and is only approximate. Here every step processes exactly ONE
new frame per row and carries everything the past contributes:

- transformer: per layer, a ring of the last `sliding_window` keys/values indexed by position
  (write the new frame, then attend to the ring with a mask), RoPE at each slot's own position;
- every causal conv: its last (k-1)*dilation input samples (zeros at start = the package's
  left zero-padding, so the first frame is exact too);
- every transposed conv: the tail that overlaps the next frame (bias-free; bias added once).

State lives in fixed device tensors with a leading `max_slots` dimension. A batch row names its
slot; rows are gathered by `slots`, computed, and scattered back, with no host sync and no Python
branching on tensor values, so a step can later be CUDA-graph captured per batch size.
`slots` in one call must be distinct (a slot is one stream and advances one frame per call).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as qm

from .frames import SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

__all__ = ["SAMPLES_PER_FRAME", "StreamingCodecDecoder"]


class _CausalConv:
    """A causal conv (stride 1) fed from a per-slot history of its last (k-1)*dilation inputs."""

    def __init__(self, net: qm.Qwen3TTSTokenizerV2CausalConvNet, max_slots: int, device, dtype):
        if net.stride != 1:
            raise ValueError("streaming needs stride-1 causal convs")
        self.conv = net.conv
        self.size = net.padding  # the package left-pads exactly (k-1)*dilation zeros
        self.state = torch.zeros(max_slots, net.conv.in_channels, self.size, device=device, dtype=dtype)

    def __call__(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, n] -> [B, C_out, n]
        if self.size == 0:
            return self.conv(x)
        full = torch.cat([self.state[slots], x], dim=-1)  # [B, C_in, size + n]
        self.state[slots] = full[..., full.shape[-1] - self.size:]
        return self.conv(full)


class _TransConv:
    """A causal transposed conv (kernel K, stride r) with the (K - r)-sample overlap carried over.

    The package computes the full transposed conv and drops the last K - r outputs, so output
    sample t sums the inputs whose kernels cover t. Streaming: add the previous frame's bias-free
    tail to the head of this frame's output and keep this frame's tail for the next one.
    """

    def __init__(self, net: qm.Qwen3TTSTokenizerV2CausalTransConvNet, max_slots: int, device, dtype):
        self.conv = net.conv
        self.stride = net.conv.stride[0]
        self.size = net.right_pad  # K - r
        if self.size > self.stride:
            raise ValueError("overlap longer than one input sample's output is not supported")
        self.state = torch.zeros(max_slots, net.conv.out_channels, self.size, device=device, dtype=dtype)

        c = self.conv
        if c.groups != 1 or c.dilation[0] != 1 or c.padding[0] != 0 or c.output_padding[0] != 0:
            raise ValueError("streaming transposed convs must be plain (groups 1, no dilation or padding)")
        # [C_in, C_out * K]: the transposed conv as one matmul per frame. Over a few input samples
        # the conv_transpose kernel falls back to a slow path on the CPU (10 ms for the decoder's
        # first 1536->768 upsample; the matmul takes ~1 ms)
        self.matrix = c.weight.detach().reshape(c.in_channels, -1)
        self.out_channels, self.kernel = c.out_channels, c.kernel_size[0]

    def __call__(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, n] -> [B, C_out, n * r]
        B, _, n = x.shape
        r, size = self.stride, self.size
        cols = (x.transpose(1, 2) @ self.matrix).view(B, n, self.out_channels, self.kernel)  # [B, n, C_out, K]
        # input t writes outputs t*r .. t*r + K - 1: its first r land in its own stride, the other
        # K - r (= size <= r) at the head of the next one (or, for the last input, into the state)
        y = cols[..., :r].permute(0, 2, 1, 3).reshape(B, self.out_channels, n * r)
        bias = self.conv.bias[None, :, None] if self.conv.bias is not None else 0.0
        if size == 0:
            return y + bias
        spill = cols[..., r:].permute(0, 2, 1, 3)  # [B, C_out, n, size]
        carried = torch.cat([self.state[slots][:, :, None], spill[:, :, :-1]], dim=2)  # [B, C_out, n, size]
        self.state[slots] = spill[:, :, -1]
        y = y.view(B, self.out_channels, n, r)
        y = torch.cat([y[..., :size] + carried, y[..., size:]], dim=-1)
        return y.reshape(B, self.out_channels, n * r) + bias


class _Pointwise:
    """A module that acts on each time step alone (SnakeBeta): no state."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __call__(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _ConvNeXt:
    """The package's ConvNeXt block with its depthwise causal conv made stateful."""

    def __init__(self, block: qm.Qwen3TTSTokenizerV2ConvNeXtBlock, dwconv: _CausalConv):
        self.block, self.dwconv = block, dwconv

    def __call__(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        b = self.block
        h = self.dwconv(x, slots).permute(0, 2, 1)  # [B, n, C]; the rest is per time step
        h = b.gamma * b.pwconv2(b.act(b.pwconv1(b.norm(h))))
        return x + h.permute(0, 2, 1)


class _Residual:
    """x + ops(x): the decoder's residual unit (act1, conv1, act2, conv2)."""

    def __init__(self, ops: list):
        self.ops = ops

    def __call__(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        h = x
        for op in self.ops:
            h = op(h, slots)
        return x + h


class _CodebookLookup:
    """The split RVQ's decode (`quantizer.decode(codes[:, :, None])`) as table lookups: each
    codebook's projected embeddings are computed once here (the package divides each 2048-row
    table by its usage counts on every call: 16 such divisions per frame) and summed in the
    package's order."""

    def __init__(self, quantizer: qm.SplitResidualVectorQuantizer):
        self.groups = []
        start = 0
        with torch.no_grad():
            for rvq in (quantizer.rvq_first, quantizer.rvq_rest):
                # vq.decode of every code at once: [1, dim, size] -> the table [size, dim]
                tables = [vq.decode(torch.arange(vq.codebook_size, device=rvq.output_proj.weight.device)[None])[0].T
                          .contiguous() for vq in rvq.vq.layers]
                self.groups.append((start, tables, rvq.output_proj))
                start += len(tables)

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, CODEBOOKS] -> [B, codebook_dim, 1]
        out: torch.Tensor | None = None
        for start, tables, output_proj in self.groups:
            q = torch.zeros([1], device=codes.device)[0]
            for k, table in enumerate(tables, start):
                q = q + F.embedding(codes[:, k:k + 1], table).transpose(1, 2)  # [B, dim, 1]
            q = output_proj(q)
            out = q if out is None else out + q
        assert out is not None
        return out


class StreamingCodecDecoder:
    """Decode one codec frame per call for up to `max_slots` independent streams.

    `decoder` is a loaded `Qwen3TTSTokenizerV2Decoder`; its modules and weights are used as they
    are. If `device`/`dtype` are given the decoder is moved there (in place); by default the state
    follows the decoder's parameters. Frame-exact: concatenating `step` outputs equals
    `decoder(codes)` on the whole utterance (fp32: max |diff| ~1e-6 measured).
    """

    def __init__(self, decoder: qm.Qwen3TTSTokenizerV2Decoder, max_slots: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        if device is not None or dtype is not None:
            decoder.to(device=device, dtype=dtype)
        param = next(decoder.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.decoder, self.max_slots = decoder, max_slots
        cfg = decoder.config
        if int(decoder.total_upsample) != SAMPLES_PER_FRAME:
            raise ValueError(f"decoder upsamples by {decoder.total_upsample}, expected {SAMPLES_PER_FRAME}")
        tr = decoder.pre_transformer
        self.window = cfg.sliding_window  # keys q-71..q: the mask is kv > q - window
        attn = tr.layers[0].self_attn
        kv_shape = (len(tr.layers), max_slots, cfg.num_key_value_heads, self.window, attn.head_dim)
        # k/v: [layers, slots, kv_heads, window, head_dim]; ring entry j holds position p, p % window == j
        self.k = torch.zeros(kv_shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(kv_shape, device=self.device, dtype=self.dtype)
        self.ring_index = torch.arange(self.window, device=self.device)  # [window]
        self.positions = torch.zeros(max_slots, dtype=torch.long, device=self.device)  # frames decoded
        self._convs: list[_CausalConv | _TransConv] = []
        self.lookup = _CodebookLookup(decoder.quantizer)
        self.pre_conv = self._causal(decoder.pre_conv)
        self.conv_ops = [op for m in [*decoder.upsample, *decoder.decoder] for op in self._compile(m)]
        log.debug("streaming codec decoder: %d slots, %.1f MiB state", max_slots, self.state_bytes() / 2**20)

    def _causal(self, net: qm.Qwen3TTSTokenizerV2CausalConvNet) -> _CausalConv:
        op = _CausalConv(net, self.max_slots, self.device, self.dtype)
        self._convs.append(op)
        return op

    def _transposed(self, net: qm.Qwen3TTSTokenizerV2CausalTransConvNet) -> _TransConv:
        op = _TransConv(net, self.max_slots, self.device, self.dtype)
        self._convs.append(op)
        return op

    def _compile(self, m: torch.nn.Module) -> list:
        """Mirror the package's conv stack as a flat list of streaming ops."""
        if isinstance(m, qm.Qwen3TTSTokenizerV2CausalConvNet):
            return [self._causal(m)]
        if isinstance(m, qm.Qwen3TTSTokenizerV2CausalTransConvNet):
            return [self._transposed(m)]
        if isinstance(m, qm.Qwen3TTSTokenizerV2ConvNeXtBlock):
            return [_ConvNeXt(m, self._causal(m.dwconv))]
        if isinstance(m, qm.Qwen3TTSTokenizerV2DecoderDecoderResidualUnit):
            return [_Residual([op for sub in (m.act1, m.conv1, m.act2, m.conv2) for op in self._compile(sub)])]
        if isinstance(m, qm.SnakeBeta):
            return [_Pointwise(m)]
        if isinstance(m, qm.Qwen3TTSTokenizerV2DecoderDecoderBlock):
            return [op for sub in m.block for op in self._compile(sub)]
        if isinstance(m, torch.nn.ModuleList):
            return [op for sub in m for op in self._compile(sub)]
        raise TypeError(f"no streaming rule for {type(m).__name__}: the decoder changed shape")

    def _slots(self, slots: torch.Tensor | list[int]) -> torch.Tensor:
        return torch.as_tensor(slots, dtype=torch.long).to(self.device)

    @torch.inference_mode()
    def reset(self, slots: torch.Tensor | list[int]) -> None:
        """Clear those slots: the next `step` on them decodes the first frame of a new utterance."""
        slots = self._slots(slots)
        self.positions[slots] = 0
        self.k[:, slots] = 0  # masked anyway, but stale values must not leak (0 * inf = nan)
        self.v[:, slots] = 0
        for op in self._convs:
            op.state[slots] = 0

    @torch.inference_mode()
    def step(self, codes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Decode one new frame per row. codes: [B, CODEBOOKS] long, slots: [B] long -> audio [B, SAMPLES_PER_FRAME]."""
        pos = self.positions[slots]  # [B]
        latent = self.lookup(codes).to(self.dtype)  # [B, codebook_dim, 1]
        x = self.pre_conv(latent, slots)  # [B, latent_dim, 1]
        h = self._transformer_step(x[:, :, 0], slots, pos)  # [B, latent_dim]
        h = h[:, :, None]  # [B, latent_dim, 1]
        for op in self.conv_ops:
            h = op(h, slots)  # ... -> [B, 1, SAMPLES_PER_FRAME]
        self.positions[slots] = pos + 1
        return h[:, 0, :].clamp(min=-1, max=1)

    def _transformer_step(self, x: torch.Tensor, slots: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The pre_transformer on one frame per row with the sliding-window KV ring. x: [B, latent]."""
        tr = self.decoder.pre_transformer
        h = tr.input_proj(x)[:, None, :]  # [B, 1, hidden]
        cos, sin = tr.rotary_emb(h, pos[:, None])  # [B, 1, head_dim] each
        ring = pos % self.window  # [B]: where this frame's K/V go
        # After writing position p the ring holds positions max(0, p-window+1)..p, at entries <= p.
        mask = (self.ring_index[None, :] <= pos[:, None])[:, None, None, :]  # [B, 1, 1, window]
        for i, layer in enumerate(tr.layers[: tr.config.num_hidden_layers]):
            a = layer.self_attn
            y = layer.input_layernorm(h)
            q = a.q_norm(a.q_proj(y).view(*y.shape[:2], -1, a.head_dim)).transpose(1, 2)  # [B, Hq, 1, D]
            k = a.k_norm(a.k_proj(y).view(*y.shape[:2], -1, a.head_dim)).transpose(1, 2)  # [B, Hkv, 1, D]
            v = a.v_proj(y).view(*y.shape[:2], -1, a.head_dim).transpose(1, 2)  # [B, Hkv, 1, D]
            q, k = qm.apply_rotary_pos_emb(q, k, cos, sin)
            k_ring, v_ring = self.k[i], self.v[i]  # [slots, Hkv, window, D] views
            k_ring[slots, :, ring] = k[:, :, 0]
            v_ring[slots, :, ring] = v[:, :, 0]
            keys = qm.repeat_kv(k_ring[slots], a.num_key_value_groups)  # [B, Hq, window, D]
            values = qm.repeat_kv(v_ring[slots], a.num_key_value_groups)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=a.scaling)
            o = a.o_proj(o.transpose(1, 2).reshape(*y.shape[:2], -1))  # [B, 1, hidden]
            h = h + layer.self_attn_layer_scale(o)
            h = h + layer.mlp_layer_scale(layer.mlp(layer.post_attention_layernorm(h)))
        return tr.output_proj(tr.norm(h))[:, 0, :]  # [B, latent]

    def state_bytes(self) -> int:
        """Device memory held by the streaming state (all slots)."""
        tensors = [self.k, self.v, self.positions, *(op.state for op in self._convs)]
        return sum(t.numel() * t.element_size() for t in tensors)
