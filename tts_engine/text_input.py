"""Incremental text tokenization for text that is still being written (an LLM reply).

Byte-level BPE never merges across pre-token boundaries (Qwen2's regex split), so the tokens of
every complete pre-token are final. The last pre-token may still grow ("Hel" + "lo"), so it is held
back until the next one starts or the text ends. Pushing a text in any chunking therefore yields
exactly the tokens of tokenizing it at once.
"""

from __future__ import annotations

import threading
from typing import Any


class SharedTokenizer:
    """The engine's one text tokenizer, used by every stream on the engine thread and by callers on
    theirs (spoken_text after a barge-in). A fast (Rust) tokenizer must not be entered by two
    threads at once: encoding with split_special_tokens sets a flag inside it, and a concurrent call
    fails with "Already borrowed" (or runs with the other call's flag), so every use takes one lock."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text: no special tokens added, "<|im_start|>" in it read as text."""
        if not text:
            return []
        with self._lock:
            return list(self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    def pre_tokenize(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        with self._lock:
            return self._pre_tokenizer.pre_tokenize_str(text)

    def decode(self, tokens: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(tokens, skip_special_tokens=True)


class IncrementalTokenizer:
    def __init__(self, tokenizer: SharedTokenizer) -> None:
        self._tokenizer = tokenizer
        self._pending = ""
        self._started = False  # leading whitespace of the whole text is dropped
        self.chars_seen = 0

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)

    def push(self, chunk: str) -> list[int]:
        """Add text; return the tokens that can no longer change."""
        self.chars_seen += len(chunk)
        if not self._started:
            chunk = chunk.lstrip()
            if not chunk:
                return []
            self._started = True
        self._pending += chunk
        pieces = self._tokenizer.pre_tokenize(self._pending)
        if len(pieces) < 2:
            return []
        cut = pieces[-1][1][0]  # start offset of the last (possibly unfinished) pre-token
        done, self._pending = self._pending[:cut], self._pending[cut:]
        return self._encode(done)

    def end(self) -> list[int]:
        """The text is complete: return the held-back tokens (trailing whitespace dropped)."""
        done, self._pending = self._pending.rstrip(), ""
        return self._encode(done)

    def tokenize_all(self, text: str) -> list[int]:
        """Tokens of a complete text, by the same rules as push() + end()."""
        return self._encode(text.strip())
