"""Word timestamps from the dual-track alignment: which text token each 80 ms codec frame carried.

In dual-track streaming the talker reads text token k at the step that makes frame k (token 0 rides
in the prompt, see Utterance.text_id_for_talk), so a word starts at the frame of its first token, plus
WORD_LAG_FRAMES, and ends where the next word starts; the last word ends with the audio. This is an
alignment at frame (80 ms) granularity read off the model's own input schedule - not a forced
alignment of the waveform. With the whole text in the prompt (synthesize()) there is no schedule to
read, and the words are spread over the audio in proportion to their tokens: an estimate.

Times are seconds on the stream's output timeline (sample index / output rate; exact at every
supported rate, since a frame is a whole number of samples at each). The output resampler's own
delay (under 2 ms) is not added.

A word is a run of tokens up to the next token that begins with whitespace; in scripts written
without spaces (CJK), every character-bearing token is a word of its own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from .frames import FRAME_S

# Frames between the step that reads a token and the frame whose audio says it. 0: the frame made
# with the token as input. A trained talker may voice a token a frame or two later; with random test
# weights there is nothing to measure, so this stays the model's input schedule until it is measured
# on real speech.
WORD_LAG_FRAMES = 0


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float
    first_token: int  # index into the stream's text tokens
    end_token: int  # one past its last token
    # the end is known: the next word has started, or the audio is complete. The last word of a
    # stream still speaking ends, for now, where its audio so far ends.
    final: bool = True

    def as_dict(self) -> dict[str, float | str]:
        return {"word": self.word, "start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4)}


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def group_words(tokens: list[int], decode: Callable[[list[int]], str]) -> list[tuple[int, int, str]]:
    """(first token, end token, word) for each word of `tokens`; whitespace-only runs make no word."""
    words: list[tuple[int, int, str]] = []
    start = 0
    previous = ""
    for i, token in enumerate(tokens):
        piece = decode([token])
        begins = bool(piece) and (piece[0].isspace() or _wide(piece[0]) or (bool(previous) and _wide(previous[-1])))
        if i > start and begins:
            words.append((start, i, decode(tokens[start:i]).strip()))
            start = i
        previous = piece or previous
    if start < len(tokens):
        words.append((start, len(tokens), decode(tokens[start:]).strip()))
    return [w for w in words if w[2]]


def word_timings(tokens: list[int], frames: int, decode: Callable[[list[int]], str],
                 aligned: bool = True, complete: bool = True) -> list[WordTiming]:
    """The words said by the first `frames` frames of audio made from `tokens`.

    aligned: the tokens were fed one per frame (dual-track streaming); False: the whole text was in
    the prompt and the words are spread over the frames in proportion to their tokens.
    complete: the audio has ended (otherwise the last word's end is provisional, and so is every
    word of a proportional spread)."""
    return time_words(group_words(tokens, decode) if frames > 0 else [], len(tokens), frames, aligned, complete)


def time_words(words: list[tuple[int, int, str]], n_tokens: int, frames: int, aligned: bool = True,
               complete: bool = True) -> list[WordTiming]:
    """word_timings over words already grouped (group_words of `n_tokens` tokens)."""
    if frames <= 0 or not words:
        return []
    starts: list[float]
    if aligned:
        starts = [first + WORD_LAG_FRAMES for first, _, _ in words]
    else:
        starts = [first * frames / n_tokens for first, _, _ in words]
    out: list[WordTiming] = []
    for i, (first, end, word) in enumerate(words):
        if starts[i] >= frames:
            break  # not said yet (or never: the frame cap cut the utterance)
        following = i + 1 < len(words) and starts[i + 1] < frames
        end_frame = starts[i + 1] if following else frames
        out.append(WordTiming(word=word, start_s=starts[i] * FRAME_S, end_s=end_frame * FRAME_S,
                              first_token=first, end_token=end, final=complete or (following and aligned)))
    return out


def heard_words(timings: list[WordTiming], seconds_played: float) -> list[WordTiming]:
    """The words whose audio had been played to the end after `seconds_played` (a word cut in the
    middle was not heard as a word). A tolerance of 1 ms keeps a float sum of frames on its frame."""
    return [w for w in timings if w.final and w.end_s <= seconds_played + 1e-3]
