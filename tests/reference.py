"""Codes from the qwen-tts package's own generate_custom_voice(): the reference the engine must match."""

from __future__ import annotations

import numpy as np
import torch


def package_codes(reference_model, text: str, speaker: str, language: str, frames: int,
                  non_streaming_mode: bool) -> np.ndarray:
    """Greedy codes [frames, 16] of generate_custom_voice, captured where it hands them to its decoder.

    `frames` frames need frames + 1 new tokens (the last one is EOS or cut by the length limit).
    """
    tokenizer = reference_model.model.speech_tokenizer
    captured = []
    original = tokenizer.decode

    def capture(items, *args, **kwargs):
        captured.extend(item["audio_codes"] for item in items)
        return original(items, *args, **kwargs)

    tokenizer.decode = capture
    try:
        with torch.inference_mode():
            reference_model.generate_custom_voice(
                text, speaker=speaker, language=language, non_streaming_mode=non_streaming_mode,
                do_sample=False, subtalker_dosample=False, max_new_tokens=frames + 1)
    finally:
        tokenizer.decode = original
    return captured[0].cpu().numpy()
