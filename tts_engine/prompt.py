"""Talker prompt (prefill) embeddings, built as qwen-tts 0.1.1 builds them for CustomVoice models.

Layout (see Qwen3TTSForConditionalGeneration.generate): 3 role tokens "<|im_start|>assistant\\n"
(text track), then the codec prefix [think(+language) tags, speaker, pad] with tts_pad/tts_bos on the
text track, then the codec BOS. In streaming ("dual track") mode the first text token rides on the
codec BOS and the rest is fed one token per generated frame; in non-streaming mode the whole text
(+ tts_eos) is in the prompt and every frame is fed tts_pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import UnknownLanguageError, UnknownSpeakerError


@dataclass(frozen=True)
class Voice:
    """A validated (speaker, language) pair and the codec ids of its prompt prefix."""

    speaker: str
    language: str
    codec_prefix: tuple[int, ...]  # think tags (+ language), speaker, pad, bos


def resolve_voice(talker_config: Any, speaker: str, language: str, supported_languages: list[str]) -> Voice:
    """Validate speaker and language (case-insensitive) with errors that list the valid values."""
    spk = (speaker or "").lower()
    if spk not in talker_config.spk_id:
        raise UnknownSpeakerError(f"unknown speaker {speaker!r}; this checkpoint has: {sorted(talker_config.spk_id)}")
    lang = (language or "auto").lower()
    if lang not in supported_languages:
        raise UnknownLanguageError(f"unsupported language {language!r}; supported: {sorted(supported_languages)}")
    c = talker_config
    language_id = None if lang == "auto" else c.codec_language_id[lang]
    dialect = c.spk_is_dialect.get(spk, False)
    if lang in ("chinese", "auto") and dialect:
        language_id = c.codec_language_id[dialect]  # dialect speakers use their dialect tag
    if language_id is None:
        tags = [c.codec_nothink_id, c.codec_think_bos_id, c.codec_think_eos_id]
    else:
        tags = [c.codec_think_id, c.codec_think_bos_id, language_id, c.codec_think_eos_id]
    prefix = (*tags, c.spk_id[spk], c.codec_pad_id, c.codec_bos_id)
    return Voice(speaker=spk, language=lang, codec_prefix=prefix)


class PromptBuilder:
    """Builds prefill embeddings from the model's own embedding tables and text projection."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self._talker = model.talker
        self._config = model.config
        self._device = model.talker.codec_head.weight.device
        role = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        if len(role) != 3:
            raise ValueError(f"role prefix tokenizes to {len(role)} tokens; the model expects 3")
        self.role_ids = role
        self.tts_pad_id = model.config.tts_pad_token_id
        self.tts_eos_id = model.config.tts_eos_token_id
        self.tts_bos_id = model.config.tts_bos_token_id

    def _ids(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self._device)

    def text_embed(self, ids: list[int]) -> torch.Tensor:
        """[1, n, D]: projected text-track embeddings of token ids."""
        return self._talker.text_projection(self._talker.get_text_embeddings()(self._ids(ids)))

    def codec_embed(self, ids: list[int]) -> torch.Tensor:
        """[1, n, D]: codec-track embeddings."""
        return self._talker.get_input_embeddings()(self._ids(ids))

    def fixed_prefix(self, voice: Voice) -> torch.Tensor:
        """[1, P, D]: the part of the prompt that depends only on the voice (cacheable)."""
        bos, _eos, pad = self.text_embed([self.tts_bos_id, self.tts_eos_id, self.tts_pad_id]).chunk(3, dim=1)
        codec = self.codec_embed(list(voice.codec_prefix))  # [1, C, D]
        text_track = torch.cat((pad.expand(-1, codec.shape[1] - 2, -1), bos), dim=1)
        return torch.cat((self.text_embed(self.role_ids), text_track + codec[:, :-1]), dim=1)

    def streaming_tail(self, voice: Voice, first_text_id: int) -> torch.Tensor:
        """[1, 1, D]: after the fixed prefix in dual-track mode: the first text token on the codec BOS.
        The rest of the text is fed one token per generated frame."""
        return self.text_embed([first_text_id]) + self.codec_embed([voice.codec_prefix[-1]])

    def full_text_tail(self, voice: Voice, text_ids: list[int]) -> torch.Tensor:
        """[1, n+2, D]: after the fixed prefix in non-streaming mode: the whole text + tts_eos on codec
        pads, then the codec BOS; every generated frame is then fed tts_pad."""
        _bos, eos, pad = self.text_embed([self.tts_bos_id, self.tts_eos_id, self.tts_pad_id]).chunk(3, dim=1)
        c = self._config.talker_config
        text = torch.cat((self.text_embed(text_ids), eos), dim=1)
        text = text + self.codec_embed([c.codec_pad_id] * (len(text_ids) + 1))
        return torch.cat((text, pad + self.codec_embed([c.codec_bos_id])), dim=1)
