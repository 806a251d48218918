"""Load a Qwen3-TTS checkpoint through the qwen-tts classes (or build random full-size weights).

The engine runs its own generation loop, but weights, configs, the text tokenizer and the speech
decoder all come from the official package's loaders, so a real checkpoint loads exactly as the
package loads it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import architectures as arch
from .config import EngineConfig
from .cpu_precision import codec_dtype, quantize_linears_int8
from .errors import UnsupportedModelError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("custom_voice",)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """Everything the engine needs from a checkpoint."""

    name: str
    model: Any  # qwen_tts Qwen3TTSForConditionalGeneration
    tokenizer: Any  # the text tokenizer (Qwen2TokenizerFast)
    speech_decoder: Any  # Qwen3TTSTokenizerV2Decoder (an nn.Module with a .config)
    is_test_voice: bool  # random weights: noise, not speech
    int8_linears: int = 0  # linears swapped for int8 ones by apply_precision (0: the checkpoint's arithmetic)

    @property
    def talker_config(self) -> Any:
        return self.model.config.talker_config

    @property
    def speakers(self) -> list[str]:
        return sorted(self.talker_config.spk_id)

    @property
    def languages(self) -> list[str]:
        return sorted(self.model.get_supported_languages())


def _checkpoint_dir_or_hub_id(spec: str) -> tuple[str, bool]:
    """Return (spec, is_local). A spec that is neither a folder nor a hub id is a missing folder."""
    if os.path.isdir(spec):
        return spec, True
    if HUB_ID.match(spec) and not spec.startswith((".", "~")):
        return spec, False
    raise UnsupportedModelError(
        f"checkpoint folder not found: {spec!r}. Give a local Qwen3-TTS-12Hz CustomVoice folder "
        f"(with config.json and speech_tokenizer/) or a hub id such as Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice; "
        f"for tests build one with: python -m tts_engine.tiny_checkpoint DIR")


def _read_config(spec: str, is_local: bool, local_files_only: bool) -> dict[str, Any]:
    if is_local:
        path = Path(spec) / "config.json"
        if not path.is_file():
            raise UnsupportedModelError(f"{spec!r} has no config.json: not a Qwen3-TTS checkpoint folder")
        return json.loads(path.read_text())
    from transformers.utils import cached_file

    try:
        fetched = cached_file(spec, "config.json", local_files_only=local_files_only)
    except Exception as exc:  # network down, unknown repo, gated repo ...
        raise UnsupportedModelError(
            f"{spec!r} is not a local folder and could not be fetched from the hub ({exc.__class__.__name__}: "
            f"{exc}). Download the checkpoint where the hub is reachable and pass its folder.") from exc
    if fetched is None:
        raise UnsupportedModelError(f"{spec!r} has no config.json on the hub: not a Qwen3-TTS checkpoint")
    return json.loads(Path(fetched).read_text())


def check_supported(config: dict[str, Any], name: str) -> None:
    """Raise UnsupportedModelError for checkpoints the engine cannot run, naming what it can run."""
    model_type = config.get("tts_model_type")
    tokenizer_type = config.get("tokenizer_type")
    if config.get("model_type") not in (None, "qwen3_tts"):
        raise UnsupportedModelError(f"{name}: model_type {config.get('model_type')!r} is not a Qwen3-TTS checkpoint")
    if tokenizer_type != "qwen3_tts_tokenizer_12hz":
        raise UnsupportedModelError(
            f"{name}: tokenizer {tokenizer_type!r} is not supported; the engine runs the 12 Hz family "
            f"(Qwen3-TTS-12Hz-0.6B/1.7B-CustomVoice)")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{name}: {model_type!r} checkpoints (Base = voice clone, VoiceDesign = voice from a description) "
            f"are not supported yet. Supported: CustomVoice checkpoints "
            f"(Qwen3-TTS-12Hz-0.6B-CustomVoice, Qwen3-TTS-12Hz-1.7B-CustomVoice) with their built-in speakers")
    talker = config.get("talker_config", {})
    if talker.get("use_sliding_window"):
        raise UnsupportedModelError(f"{name}: talker sliding-window attention is not supported")


def load_checkpoint(cfg: EngineConfig) -> LoadedModel:
    """Load `cfg.model` (folder or hub id) on `cfg.device` in `cfg.torch_dtype` with SDPA attention."""
    assert cfg.model is not None
    spec, is_local = _checkpoint_dir_or_hub_id(cfg.model)
    check_supported(_read_config(spec, is_local, cfg.local_files_only), spec)
    from qwen_tts import Qwen3TTSModel

    start = time.perf_counter()
    log.info("loading Qwen3-TTS checkpoint %s on %s (%s)", spec, cfg.device, cfg.torch_dtype)
    wrapper = Qwen3TTSModel.from_pretrained(
        spec, dtype=cfg.torch_dtype, attn_implementation="sdpa", local_files_only=cfg.local_files_only or is_local)
    model = wrapper.model.to(cfg.device).eval()
    decoder = model.speech_tokenizer.model.decoder.to(cfg.device).eval()
    # The speech decoder stays in float32 on the CPU; on CUDA it runs in the engine dtype.
    decoder.to(cfg.torch_dtype)
    log.info("loaded %s in %.1f s", spec, time.perf_counter() - start)
    is_test = is_local and (Path(spec) / "TINY_TEST_CHECKPOINT").exists()
    return LoadedModel(name=str(spec), model=model, tokenizer=wrapper.processor.tokenizer,
                       speech_decoder=decoder, is_test_voice=is_test)


def build_random_model(cfg: EngineConfig) -> LoadedModel:
    """Full-size architecture (`cfg.random_weights`) with random weights, built directly on the device."""
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    from .tiny_checkpoint import build_speech_tokenizer, build_text_tokenizer, special_text_ids

    assert cfg.random_weights is not None
    size = cfg.random_weights
    start = time.perf_counter()
    tokenizer = build_text_tokenizer()
    # SDPA at every level, given to each config as it is built: a parent's setting does not reach
    # sub-configs built after it (qwen-tts builds them after its own PretrainedConfig init)
    talker = arch.talker_config(size)
    talker["attn_implementation"] = "sdpa"
    talker["code_predictor_config"]["attn_implementation"] = "sdpa"
    config = Qwen3TTSConfig(
        talker_config=talker, speaker_encoder_config={}, attn_implementation="sdpa",
        tokenizer_type="qwen3_tts_tokenizer_12hz", tts_model_size=arch.MODEL_SIZE_TAG[size],
        tts_model_type="custom_voice", **special_text_ids(tokenizer))
    torch.manual_seed(cfg.seed)
    with torch.device(cfg.device):
        model = Qwen3TTSForConditionalGeneration(config).to(cfg.torch_dtype).eval()
    decoder = build_speech_tokenizer(arch.FULL_DECODER, seed=cfg.seed).decoder
    decoder = decoder.to(device=cfg.device, dtype=cfg.torch_dtype).eval()
    log.info("built random-weight %s model on %s in %.1f s", size, cfg.device, time.perf_counter() - start)
    return LoadedModel(name=f"random-{size}", model=model, tokenizer=tokenizer,
                       speech_decoder=decoder, is_test_voice=True)


def apply_precision(loaded: LoadedModel, cfg: EngineConfig) -> LoadedModel:
    """The CPU fast path: int8 linears in the talker's layers and the code predictor (`cfg.use_int8`).
    The codec head stays float (the runner reads its weight's device and dtype). The speech decoder
    in `codec_dtype` (bf16 for a full-size decoder on a CPU with bf16 instructions)."""
    decoder = loaded.speech_decoder
    decoder.to(codec_dtype(cfg, decoder.config.decoder_dim))
    if cfg.use_int8:
        talker = loaded.model.talker
        loaded.int8_linears = quantize_linears_int8(talker.model) + quantize_linears_int8(talker.code_predictor)
        log.info("int8 linears: %d in the talker and code predictor", loaded.int8_linears)
    return loaded


def load_model(cfg: EngineConfig) -> LoadedModel:
    return apply_precision(load_checkpoint(cfg) if cfg.model is not None else build_random_model(cfg), cfg)
