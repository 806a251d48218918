"""What the Qwen3-Omni thinker and the agent's TTS engine need on the GPU, from their shapes.

The numbers behind the constants and the formulas: docs/omni-on-one-gpu.md. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
THINKER_RUNTIME_GIB = 2.0  # estimate: CUDA context + vLLM's profiling peak at 8192 batched tokens
AUDIO_FRONTEND_PARAMS = 18_000_000  # the audio encoder's convolutions and output projections

# The TTS engine (tts_engine.EngineConfig) in bf16, measured on an H200 (docs/omni-on-one-gpu.md).
TTS_WEIGHT_MIB = {"0.6b": 1946, "1.7b": 3874, "tiny": 20}  # model + speech decoder parameters
TTS_KV_BYTES_PER_TOKEN = 28 * 2 * 8 * 128 * 2  # talker: 28 layers x (K, V) x 8 heads x 128 x bf16
TTS_CODEC_STATE_MIB_PER_SLOT = 2.6
TTS_RUNTIME_MIB = 2700  # CUDA context, cuBLAS workspaces, allocator cache


@dataclass(frozen=True)
class ThinkerShape:
    """What sizes the thinker; defaults: Qwen3-Omni-30B-A3B (its config.json's thinker_config)."""

    layers: int = 48
    hidden: int = 2048
    heads: int = 32
    kv_heads: int = 4
    head_dim: int = 128
    experts: int = 128
    moe_intermediate: int = 768
    vocab: int = 151936
    tied_embeddings: bool = False
    audio_layers: int = 32
    audio_width: int = 1280
    audio_ffn: int = 5120

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> ThinkerShape:
        thinker = (cfg or {}).get("thinker_config") or {}
        text, audio, d = thinker.get("text_config") or {}, thinker.get("audio_config") or {}, cls()
        return cls(layers=text.get("num_hidden_layers", d.layers), hidden=text.get("hidden_size", d.hidden),
                   heads=text.get("num_attention_heads", d.heads),
                   kv_heads=text.get("num_key_value_heads", d.kv_heads), head_dim=text.get("head_dim", d.head_dim),
                   experts=text.get("num_experts", d.experts),
                   moe_intermediate=text.get("moe_intermediate_size", d.moe_intermediate),
                   vocab=text.get("vocab_size", d.vocab),
                   tied_embeddings=bool(text.get("tie_word_embeddings", d.tied_embeddings)),
                   audio_layers=audio.get("encoder_layers", d.audio_layers),
                   audio_width=audio.get("d_model", d.audio_width), audio_ffn=audio.get("encoder_ffn_dim", d.audio_ffn))

    @property
    def quantized_params(self) -> int:
        """What weight quantization shrinks: every layer's attention projections and experts."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)  # q, o; k, v
        experts = self.experts * 3 * self.hidden * self.moe_intermediate  # gate, up, down
        return self.layers * (attention + experts)

    @property
    def full_precision_params(self) -> int:
        """Kept in bf16 by every variant: embeddings, lm_head, MoE routers, the audio encoder."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        routers = self.layers * self.hidden * self.experts
        audio = self.audio_layers * (4 * self.audio_width ** 2 + 2 * self.audio_width * self.audio_ffn)
        return embeddings + routers + audio + AUDIO_FRONTEND_PARAMS

    def weight_bytes(self, bits: int) -> int:
        # 4-bit formats keep a scale (and zero point) per group of 128 weights: ~0.25 bit per weight
        per_weight = 2.0 if bits >= 16 else (bits + (0.25 if bits <= 4 else 0.0)) / 8
        return int(self.quantized_params * per_weight + self.full_precision_params * 2)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * dtype_bytes


def find_config(model: str | None) -> dict[str, Any] | None:
    """config.json of a checkpoint folder, or of a hub id: from the Hugging Face cache, else the hub."""
    if not model:
        return None
    if Path(model).is_dir():
        candidates = [Path(model) / "config.json"]
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        repo = Path(os.environ.get("HF_HUB_CACHE") or home / "hub") / f"models--{model.replace('/', '--')}"
        ref = repo / "refs" / "main"
        candidates = [repo / "snapshots" / ref.read_text().strip() / "config.json"] if ref.is_file() else []
        candidates += sorted(repo.glob("snapshots/*/config.json"))
    else:
        return None
    for path in candidates:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None if Path(model).is_dir() else _hub_config(model)


def _hub_config(model: str) -> dict[str, Any] | None:
    """config.json from the hub (vLLM downloads the whole checkpoint next anyway): one try, 5 s,
    unless HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN")
    request = urllib.request.Request(f"{endpoint}/{model}/resolve/main/config.json",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):  # no network, an unknown or gated repo: the weights stay unknown
        return None


def weight_bits(cfg: dict[str, Any] | None, quantization: str | None) -> int | None:
    """Bits per quantized weight: online quantization, else the checkpoint's quantization_config;
    16 for a checkpoint without one, None when nothing says (no config.json to read)."""
    if quantization:
        return {"fp8": 8, "int8": 8, "mxfp8": 8, "mxfp4": 4}.get(quantization.lower())
    if cfg is None:
        return None
    q = cfg.get("quantization_config") or (cfg.get("thinker_config") or {}).get("quantization_config")
    if not q:
        return 16
    for key in ("bits", "w_bit", "num_bits"):  # AWQ, GPTQ
        if isinstance(q.get(key), int):
            return q[key]
    for group in (q.get("config_groups") or {}).values():  # compressed-tensors (llm-compressor AWQ, FP8)
        bits = ((group or {}).get("weights") or {}).get("num_bits")
        if isinstance(bits, int):
            return bits
    method, algo = str(q.get("quant_method", "")).lower(), str(q.get("quant_algo", "")).upper()
    if method in ("fp8", "fbgemm_fp8") or "FP8" in algo:  # vLLM's fp8, ModelOpt FP8
        return 8
    return 4 if "FP4" in algo else None


def tts_size(model: str | None, random_weights: str | None) -> str | None:
    """'0.6b', '1.7b' or 'tiny' (the test checkpoint); None when the checkpoint is not here to read."""
    if random_weights:
        return random_weights
    if model and (Path(model) / "TINY_TEST_CHECKPOINT").exists():
        return "tiny"
    hidden = ((find_config(model) or {}).get("talker_config") or {}).get("hidden_size")
    return {1024: "0.6b", 2048: "1.7b"}.get(hidden) if hidden else None


def tts_engine_bytes(size: str, max_streams: int, max_context: int = 2048, dtype_bytes: int = 2) -> int:
    """What the engine holds once loaded: weights, the KV cache of max_streams + 1 slots (one scratch
    slot warms voice prefixes), the codec decoder's state, and the runtime."""
    slots = max_streams + 1
    weights = TTS_WEIGHT_MIB[size] * MIB * dtype_bytes // 2
    kv = 0 if size == "tiny" else slots * max_context * TTS_KV_BYTES_PER_TOKEN * dtype_bytes // 2
    return int(weights + kv + slots * TTS_CODEC_STATE_MIB_PER_SLOT * MIB + TTS_RUNTIME_MIB * MIB)
