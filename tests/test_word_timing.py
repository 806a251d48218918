"""Word grouping and timing as pure functions: tokens are indices into a list of decoded pieces."""

from __future__ import annotations

import pytest

from tts_engine.frames import FRAME_S
from tts_engine.word_timing import group_words, heard_words, word_timings


def decoder(pieces: list[str]):
    return lambda tokens: "".join(pieces[t] for t in tokens)


def test_words_split_at_whitespace_and_keep_their_punctuation():
    pieces = ["Hello", ",", " wor", "ld", ".", " ", " Done", "!"]
    words = group_words(list(range(len(pieces))), decoder(pieces))
    # the lone space token makes no word of its own: it belongs to the gap before "Done!"
    assert [(w[2], w[0], w[1]) for w in words] == [("Hello,", 0, 2), ("world.", 2, 5), ("Done!", 6, 8)]


def test_every_character_of_a_script_without_spaces_is_a_word():
    pieces = ["你", "好", "，", "世界"]
    assert [w[2] for w in group_words([0, 1, 2, 3], decoder(pieces))] == ["你", "好", "，", "世界"]


def test_aligned_timings_start_at_the_frame_of_the_first_token():
    pieces = ["One", " two", "s", " three"]
    words = word_timings([0, 1, 2, 3], frames=6, decode=decoder(pieces))
    assert [(w.word, w.start_s, w.end_s) for w in words] == [
        ("One", 0.0, FRAME_S), ("twos", FRAME_S, 3 * FRAME_S), ("three", 3 * FRAME_S, 6 * FRAME_S)]


def test_words_not_yet_said_are_left_out_and_the_last_end_is_provisional_while_speaking():
    pieces = ["One", " two", " three"]
    words = word_timings([0, 1, 2], frames=2, decode=decoder(pieces), complete=False)
    assert [w.word for w in words] == ["One", "two"]
    assert words[0].final and not words[1].final
    assert [w.word for w in heard_words(words, 10.0)] == ["One"]  # "two" may still be going on
    done = word_timings([0, 1, 2], frames=2, decode=decoder(pieces), complete=True)
    assert [w.word for w in heard_words(done, 10.0)] == ["One", "two"]


def test_a_whole_text_prompt_spreads_words_by_their_tokens():
    pieces = ["A", " bb", "bb", " c"]
    words = word_timings([0, 1, 2, 3], frames=8, decode=decoder(pieces), aligned=False)
    assert [w.start_s for w in words] == pytest.approx([0.0, 2 * FRAME_S, 6 * FRAME_S])
    assert words[-1].end_s == pytest.approx(8 * FRAME_S)
    assert not any(w.final for w in word_timings([0, 1, 2, 3], 8, decoder(pieces), aligned=False, complete=False))


def test_heard_words_need_their_whole_audio():
    pieces = ["Yes", " indeed"]
    words = word_timings([0, 1], frames=4, decode=decoder(pieces))
    assert heard_words(words, 0.5 * FRAME_S) == []
    assert [w.word for w in heard_words(words, FRAME_S)] == ["Yes"]
    assert [w.word for w in heard_words(words, 3.9 * FRAME_S)] == ["Yes"]
    assert [w.word for w in heard_words(words, 4 * FRAME_S)] == ["Yes", "indeed"]
    assert word_timings([], 4, decoder(pieces)) == [] and word_timings([0], 0, decoder(pieces)) == []
