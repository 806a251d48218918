"""ModelRunner: the only code that touches the model and its device buffers.

Per-slot device state lives in preallocated tensors indexed by slot: talker KV cache, the hidden
state and codebook-0 token awaiting the predictor, the frame's embedding sum awaiting the talker,
the repetition-penalty history, seeds and counters. One extra SCRATCH slot absorbs the padding rows
of a batch bucket and the warm-up/capture runs, so they never touch a real stream's state.

A frame runs in three stages with static shapes (what the CUDA-graph runner captures per bucket):
`predict_fn` (codebooks 1-15), `decode_fn` (codec frame -> SAMPLES_PER_FRAME samples), `talk_fn`
(talker step -> next codebook-0 token, needs the next text token). Splitting predict from talk lets a frame's audio
go out before the text for the next frame has arrived.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .codec_decoder import StreamingCodecDecoder
from .config import EngineConfig
from .model_loading import LoadedModel
from .predictor_step import predict_codebooks
from .prefix_cache import PrefixCache
from .prompt import PromptBuilder, Voice
from .sampling import apply_repetition_penalty, choose_tokens, talker_logit_mask
from .talker_step import TalkerKVCache, talker_forward

log = logging.getLogger(__name__)

KV_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)


def kv_bucket(needed: int, max_context: int) -> int:
    """Smallest static attention length covering `needed` positions (keeps graph shapes few)."""
    for size in KV_BUCKETS:
        if size >= needed:
            return min(size, max_context)
    return max_context


def kv_buckets_for(max_context: int) -> list[int]:
    return sorted({kv_bucket(n, max_context) for n in (*KV_BUCKETS, max_context) if n <= max_context})


class ModelRunner:
    def __init__(self, loaded: LoadedModel, cfg: EngineConfig) -> None:
        self.loaded = loaded
        self.cfg = cfg
        self.rules = cfg.sampling_rules
        model = loaded.model
        self.talker = model.talker
        self.tc = model.config.talker_config
        self.device = self.talker.codec_head.weight.device
        self.dtype = self.talker.codec_head.weight.dtype
        self.prompts = PromptBuilder(model, loaded.tokenizer)
        self.scratch = cfg.max_streams  # the padding / warm-up slot
        S, D, V = cfg.max_streams + 1, self.tc.hidden_size, self.tc.vocab_size
        dev = self.device
        self.cache = TalkerKVCache(self.tc, S, cfg.max_context, dev, self.dtype)
        self.prefixes = PrefixCache(self.cache) if cfg.prefix_cache else None
        self.decoder = StreamingCodecDecoder(loaded.speech_decoder, S)
        self.past_hidden = torch.zeros(S, D, device=dev, dtype=self.dtype)  # talker state before predict
        self.code0 = torch.zeros(S, dtype=torch.long, device=dev)  # codebook-0 token awaiting predict
        self.embed_sum = torch.zeros(S, D, device=dev, dtype=self.dtype)  # frame embeddings awaiting talk
        self.seen = torch.zeros(S, V, dtype=torch.bool, device=dev)  # repetition-penalty history
        self._true = torch.ones((), dtype=torch.bool, device=dev)
        self.seed = torch.zeros(S, dtype=torch.long, device=dev)
        self.frame = torch.zeros(S, dtype=torch.long, device=dev)  # frames predicted so far
        self.logit_mask = talker_logit_mask(V, self.tc.codec_eos_token_id, dev)
        self.eos_id = self.tc.codec_eos_token_id
        self.codebook_size = loaded.speech_decoder.config.codebook_size

    def _choose_code0(self, logits: torch.Tensor, slots: torch.Tensor, new_tokens: torch.Tensor) -> torch.Tensor:
        # logits: [B, V] fp32; new_tokens: [B] codec tokens chosen so far (min_new_tokens rule)
        r = self.rules
        logits = apply_repetition_penalty(logits, self.seen[slots], r.repetition_penalty)
        logits = logits + self.logit_mask
        too_early = (new_tokens < r.min_new_tokens)[:, None]
        eos_col = torch.arange(logits.shape[1], device=logits.device)[None] == self.eos_id
        logits = logits.masked_fill(too_early & eos_col, float("-inf"))
        token = choose_tokens(logits, r.do_sample, r.temperature, r.top_k, r.top_p,
                              self.seed[slots], new_tokens, salt=0)
        # a device-side True: a Python scalar here is a host->device copy, which graph capture refuses
        self.seen.index_put_((slots, token), self._true)
        return token

    # ---- prefill (eager: one stream, prompt-length shape) ---------------------------------------

    @torch.inference_mode()
    def prefill(self, slot: int, voice: Voice, first_text_id: int | None, text_ids: list[int] | None,
                seed: int) -> int:
        """Start an utterance in `slot`; return its prompt length (the next talker position).

        Dual-track mode passes `first_text_id`; whole-text mode passes `text_ids`. With the prefix
        cache the voice's fixed part is copied in and only the text-dependent tail is computed.
        """
        p = self.prompts
        slots = torch.tensor([slot], device=self.device)
        self.seen[slot] = False
        self.seed[slot] = seed
        self.frame[slot] = 0
        self.decoder.reset(slots)
        tail = (p.streaming_tail(voice, first_text_id) if first_text_id is not None
                else p.full_text_tail(voice, text_ids or []))
        start = 0
        if self.prefixes is not None:
            start = self.prefixes.restore(voice, slot, lambda: p.fixed_prefix(voice), self._prefill_rows)
            embeds = tail
        else:
            embeds = torch.cat((p.fixed_prefix(voice), tail), dim=1)
        hidden, logits = self._prefill_rows(embeds, slot, start)
        self.past_hidden[slot] = hidden[0]
        self.code0[slot] = self._choose_code0(logits, slots, torch.zeros(1, dtype=torch.long, device=self.device))[0]
        return start + embeds.shape[1]

    def warm_prefix(self, voice: Voice) -> None:
        """Background work: compute a voice's prefix KV before its first utterance needs it."""
        if self.prefixes is not None:
            self.prefixes.warm(voice, self.scratch, lambda: self.prompts.fixed_prefix(voice), self._prefill_rows)

    def _prefill_rows(self, embeds: torch.Tensor, slot: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        # embeds: [1, L, D] placed at positions start .. start+L-1 of `slot`
        L = embeds.shape[1]
        positions = torch.arange(start, start + L, device=self.device)[None]
        slots = torch.tensor([slot], device=self.device)
        return talker_forward(self.talker, self.cache, embeds.to(self.dtype), positions, slots,
                              kv_bucket(start + L, self.cfg.max_context))

    # ---- per-frame stages (static shapes; captured as CUDA graphs per batch bucket) -------------

    def predict_fn(self, slots: torch.Tensor) -> torch.Tensor:
        """Codebooks 1-15 for each slot's waiting codebook-0 token: codes [B, CODEBOOKS]."""
        codes, embed_sum = predict_codebooks(self.talker, self.past_hidden[slots], self.code0[slots], self.rules,
                                             self.seed[slots], self.frame[slots])
        self.embed_sum[slots] = embed_sum
        self.frame[slots] += 1
        return codes

    def decode_fn(self, codes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """One codec frame per slot -> audio [B, SAMPLES_PER_FRAME]."""
        # a row whose code0 is EOS is discarded by the scheduler; clamp so the codebook lookup stays valid
        return self.decoder.step(codes.clamp(max=self.codebook_size - 1), slots)

    def talk_fn(self, slots: torch.Tensor, text_ids: torch.Tensor, positions: torch.Tensor,
                kv_len: int) -> torch.Tensor:
        """One talker step per slot, feeding the frame's embedding sum + one text-track token.

        text_ids: [B] a text token, tts_eos or tts_pad; positions: [B] talker positions.
        Returns the next codebook-0 tokens [B] (left on the device).
        """
        text = self.talker.text_projection(self.talker.get_text_embeddings()(text_ids[:, None]))  # [B, 1, D]
        embeds = self.embed_sum[slots][:, None] + text
        hidden, logits = talker_forward(self.talker, self.cache, embeds, positions[:, None], slots, kv_len)
        self.past_hidden[slots] = hidden
        token = self._choose_code0(logits, slots, self.frame[slots])
        self.code0[slots] = token
        return token

    def device_bytes(self) -> dict[str, Any]:
        return {"kv_cache_bytes": self.cache.nbytes(), "codec_state_bytes": self.decoder.state_bytes(),
                "prefix_cache_entries": len(self.prefixes) if self.prefixes is not None else 0}
