"""Text at the engine's edge: whatever an LLM stream carries becomes text the tokenizer can take.

- Lone surrogates (a JSON string may carry "\\ud800"; Python keeps it as one code point) cannot
  be encoded as UTF-8: the tokenizer raises on them. They are dropped: half a character is no text.
- C0/C1 control characters other than tab and newlines become a space: they are not speech, and a
  NUL or an escape sequence has no business reaching the model.
- Special-token strings ("<|im_start|>", "<tts_pad>") stay plain text: the tokenizer is called with
  split_special_tokens (text_input.py), so an LLM reply can never inject the model's control tokens.
Everything else (emoji, right-to-left scripts, combining marks, zero-width joiners) passes as is.
"""

from __future__ import annotations

import re

_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text  # the common case, decided in one pass
    return _CONTROLS.sub(" ", _SURROGATES.sub("", text))
