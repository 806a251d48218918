"""Talker KV of each voice's fixed prompt part, computed once and copied into new streams' slots.

The fixed part (role tokens, think/language tags, speaker, pad, bos - 8 to 9 positions) depends only
on (speaker, language), so a new utterance's prefill only has to run its text-dependent tail: the
first frame no longer pays for re-encoding the voice. Entries are tiny (positions x layers x KV) and
bounded by `max_entries` with least-recently-used eviction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from .prompt import Voice
from .talker_step import TalkerKVCache


class PrefixCache:
    def __init__(self, cache: TalkerKVCache, max_entries: int = 256) -> None:
        self._cache = cache
        self._entries: OrderedDict[Voice, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def restore(self, voice: Voice, slot: int, build_embeds: Callable[[], torch.Tensor],
                prefill_rows: Callable[[torch.Tensor, int, int], object]) -> int:
        """Put the voice's prefix KV into `slot` (computing it on first use); return its length."""
        entry = self._entries.get(voice)
        if entry is None:
            self.misses += 1
            embeds = build_embeds()  # [1, P, D]
            prefill_rows(embeds, slot, 0)
            length = embeds.shape[1]
            entry = (self._cache.k[:, slot, :, :length].clone(), self._cache.v[:, slot, :, :length].clone())
            self._entries[voice] = entry
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
            return length
        self.hits += 1
        self._entries.move_to_end(voice)
        k, v = entry
        length = k.shape[2]  # k: [layers, kv_heads, P, head_dim]
        self._cache.k[:, slot, :, :length] = k
        self._cache.v[:, slot, :, :length] = v
        return length

    def warm(self, voice: Voice, scratch_slot: int, build_embeds: Callable[[], torch.Tensor],
             prefill_rows: Callable[[torch.Tensor, int, int], object]) -> None:
        """Background work: compute a voice's prefix ahead of its first utterance."""
        if voice not in self._entries:
            self.restore(voice, scratch_slot, build_embeds, prefill_rows)
            self.misses -= 1  # warming is not a miss of a real utterance
