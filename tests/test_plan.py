"""plan_step, the scheduling policy, as a pure function: plain stream views and a made-up clock in,
a plan out. No engine thread, no model, no sleeps, no patched time."""

from __future__ import annotations

import pytest

from tts_engine.frames import FRAME_S
from tts_engine.plan import (
    GUARDED_PREFILLS,
    IDLE_SLEEP_S,
    MIN_SLEEP_S,
    EngineState,
    Phase,
    Plan,
    Priority,
    StreamView,
    plan_step,
)

NOW = 1000.0  # the made-up clock


def playing(id: int, frames: int, playing_for: float, phase: Phase = Phase.PREDICT, **kw) -> StreamView:
    """A stream that has delivered `frames` frames and whose first packet was ready `playing_for` s ago:
    its lead (audio buffered ahead of real-time playback) is frames * 80 ms - playing_for."""
    return StreamView(id=id, phase=phase, frames=frames, started_at=NOW - playing_for, **kw)


def new(id: int, **kw) -> StreamView:
    return StreamView(id=id, phase=Phase.PREFILL, prefill_ready=True, **kw)


def plan(*streams: StreamView, max_batch: int = 32, max_lead_s: float | None = None, guard_s: float = 0.3,
         background: int = 0, now: float = NOW) -> Plan:
    return plan_step(EngineState(streams=streams, max_batch=max_batch, max_lead_s=max_lead_s, guard_s=guard_s,
                                 background_jobs=background), now)


def test_lead_is_audio_ahead_of_playback():
    assert playing(1, frames=10, playing_for=0.3).lead(NOW) == pytest.approx(10 * FRAME_S - 0.3)
    assert new(1).lead(NOW) == float("-inf")  # no packet yet: the most urgent of all


def test_cancelled_streams_are_dropped_first_and_get_nothing_else():
    p = plan(playing(1, 5, 0.1, stopping=True), new(2, stopping=True), playing(3, 5, 0.1))
    assert p.drop == (1, 2)
    assert p.prefill == () and p.predict == (3,) and p.talk == (3,)
    assert p.sleep_s is None


def test_a_new_stream_prefills_predicts_and_talks_in_one_step():
    """Its first audio is never queued behind running streams, even with the batch full of them."""
    running = [playing(i, frames=2, playing_for=0.0) for i in range(1, 4)]
    p = plan(*running, new(9), max_batch=2)
    assert p.prefill == (9,)
    assert p.predict[0] == 9 and len(p.predict) == 2
    assert p.talk[0] == 9


def test_prefill_waits_for_its_text_and_talk_for_the_next_token():
    waiting = StreamView(id=1, phase=Phase.PREFILL, prefill_ready=False)
    assert plan(waiting) == Plan(sleep_s=IDLE_SLEEP_S)
    # first token only: the frame can be made, but the talk after it needs token 1
    p = plan(new(2, text_horizon=1))
    assert (p.prefill, p.predict, p.talk) == ((2,), (2,), ())
    # 3 frames made, 3 tokens known: it must wait for more text (or the end of it)
    assert plan(playing(3, 3, 0.0, phase=Phase.TALK, text_horizon=3)) == Plan(sleep_s=IDLE_SLEEP_S)
    assert plan(playing(3, 3, 0.0, phase=Phase.TALK, text_horizon=4)).talk == (3,)
    assert plan(playing(3, 3, 0.0, phase=Phase.TALK, text_horizon=None)).talk == (3,)  # text ended


def test_a_row_that_predicts_talks_in_the_same_step_when_its_text_is_there():
    # 4 tokens known: after its 3rd frame stream 1 talks with token 3; stream 2, after its 4th
    # frame, would need token 4
    p = plan(playing(1, 2, 0.0, text_horizon=4), playing(2, 3, 0.0, text_horizon=4))
    assert p.predict == (1, 2)
    assert p.talk == (1,)


def test_earliest_deadline_first_under_a_batch_limit():
    ahead = playing(1, frames=20, playing_for=0.5)  # lead 1.1 s
    behind = playing(2, frames=10, playing_for=0.6)  # lead 0.2 s
    middle = playing(3, frames=10, playing_for=0.2, phase=Phase.TALK)  # lead 0.6 s
    p = plan(ahead, behind, middle, max_batch=2)
    assert p.predict == (2,) and p.talk == (2, 3)  # the two least-buffered, whatever their stage
    assert plan(ahead, behind, middle, max_batch=1) == Plan(predict=(2,), talk=(2,))
    assert plan(ahead, behind, middle).talk == (2, 3, 1)  # everyone, most urgent first


def test_equally_urgent_streams_keep_admission_order():
    streams = [playing(i, frames=4, playing_for=0.1) for i in (5, 3, 8)]
    assert plan(*streams, max_batch=2).predict == (5, 3)


def test_the_lead_limit_holds_back_a_stream_that_is_ahead_until_playback_catches_up():
    ahead = playing(1, frames=20, playing_for=0.1)  # lead 1.5 s
    held = plan(ahead, max_lead_s=0.3)
    assert held.predict == () and held.talk == ()
    assert held.sleep_s == pytest.approx(1.2)  # until its lead falls to 0.3 s
    assert plan(ahead, max_lead_s=0.3, now=NOW + 1.2).predict == (1,)  # the made-up clock moved on
    assert plan(ahead, max_lead_s=None).predict == (1,)  # no limit


def test_offline_synthesis_is_never_held_back():
    offline = playing(1, frames=200, playing_for=0.1, offline=True)
    assert plan(offline, max_lead_s=0.3).predict == (1,)


def test_idle_sleep_bounds():
    almost = playing(1, frames=5, playing_for=0.1 - 1e-5)  # lead a hair above the limit
    assert plan(almost, max_lead_s=0.3).sleep_s == MIN_SLEEP_S
    assert plan(max_lead_s=0.3).sleep_s == IDLE_SLEEP_S
    # a stream waiting for text is not held back by the limit: waking for it is the caller's push
    waiting = playing(2, frames=20, playing_for=0.1, phase=Phase.TALK, text_horizon=20)
    assert plan(waiting, max_lead_s=0.3).sleep_s == IDLE_SLEEP_S


def test_background_work_only_when_nothing_else_can_run():
    assert plan(background=2) == Plan(background=True)
    assert plan(playing(1, 2, 0.0), background=2).background is False
    held = playing(1, frames=20, playing_for=0.1)
    assert plan(held, max_lead_s=0.3, background=1) == Plan(background=True)  # held back counts as idle
    assert plan(new(1, stopping=True), background=1) == Plan(drop=(1,))  # a drop is work


# ---- priority classes: live calls, then API streams, then whole files ------------------------------

LIVE, STREAMING, WHOLE = Priority.LIVE, Priority.STREAMING, Priority.WHOLE


def ahead(id: int, lead: float, priority: Priority = LIVE, **kw) -> StreamView:
    """A running stream of `priority` with `lead` seconds of audio buffered ahead of its playback."""
    return playing(id, frames=25, playing_for=25 * FRAME_S - lead, priority=priority, **kw)


def test_classes_go_in_order_whatever_their_slack():
    streams = (ahead(3, 0.35, WHOLE), ahead(2, 0.4, STREAMING), ahead(1, 0.9, LIVE))  # all above the guard
    assert plan(*streams).predict == (1, 2, 3)
    assert plan(*streams, max_batch=2).predict == (1, 2)  # the whole file waits, though least buffered


def test_within_a_class_earliest_deadline_first_and_ties_keep_admission_order():
    streams = [ahead(i, 0.5, STREAMING) for i in (5, 3, 8)] + [ahead(9, 0.4, STREAMING), ahead(1, 1.0)]
    assert plan(*streams).predict == (1, 9, 5, 3, 8)
    assert plan(*streams, max_batch=3).predict == (1, 9, 5)


def test_a_live_stream_under_the_guard_runs_alone():
    """Every extra row makes the step slower: while a live stream has less than guard_s buffered,
    no lower class joins - not even one that is further behind."""
    others = (ahead(2, 0.0, STREAMING), ahead(3, -0.2, WHOLE))
    assert plan(ahead(1, 0.29), *others, guard_s=0.3).predict == (1,)
    # the live one is safe: the API stream joins, and being under the guard itself holds the whole file back
    assert plan(ahead(1, 0.31), *others, guard_s=0.3).predict == (1, 2)
    assert plan(ahead(1, 0.1), *others, guard_s=0.0).predict == (1, 2, 3)  # no guard: only class order


def test_a_new_live_stream_runs_alone_until_it_has_the_guard_ahead():
    running = (ahead(2, 0.5, STREAMING), ahead(3, 0.5, WHOLE))
    p = plan(*running, new(9))
    assert (p.prefill, p.predict, p.talk) == ((9,), (9,), (9,))
    assert plan(*running, playing(9, frames=1, playing_for=0.0)).predict == (9,)  # 80 ms buffered: not yet
    assert plan(*running, ahead(9, 0.31)).predict == (9, 2, 3)


def test_an_api_stream_under_the_guard_holds_back_whole_files_but_not_live_calls():
    assert plan(ahead(1, 0.5), ahead(2, 0.1, STREAMING), ahead(3, 0.0, WHOLE)).predict == (1, 2)
    p = plan(ahead(1, 0.5), new(2, priority=STREAMING), ahead(3, 0.0, WHOLE))
    assert (p.prefill, p.predict) == ((2,), (1, 2))


def test_nothing_starves_while_the_live_streams_are_safe():
    whole = ahead(3, 0.0, WHOLE)
    assert plan(ahead(1, 0.5), ahead(2, 0.6, STREAMING), whole).predict == (1, 2, 3)  # all above the guard
    assert plan(ahead(1, 1.2), whole, max_lead_s=1.0).predict == (3,)  # the live one is held back: no row
    waiting = playing(1, frames=3, playing_for=1.0, phase=Phase.TALK, text_horizon=3)  # behind, but no text
    assert plan(waiting, whole).talk == (3,)
    assert plan(StreamView(id=1, phase=Phase.PREFILL), whole).predict == (3,)  # opened, no text yet
    assert plan(whole).predict == (3,)


def test_whole_files_ignore_the_lead_limit_and_api_streams_keep_it():
    assert plan(ahead(1, 1.5, WHOLE), max_lead_s=1.0).predict == (1,)
    held = plan(ahead(1, 1.5, STREAMING), max_lead_s=1.0)
    assert held.predict == () and held.sleep_s == pytest.approx(0.5)
    assert not ahead(1, 0.0, WHOLE).paced and not ahead(1, 0.0, offline=True).paced
    assert ahead(1, 0.0, STREAMING).paced and ahead(1, 0.0).paced


def test_lower_classes_prefill_one_new_stream_per_step_beside_a_more_urgent_open_stream():
    """A whole text's prompt is the costliest row: a burst of them must not make one long step."""
    assert GUARDED_PREFILLS == 1
    burst = (new(2, priority=WHOLE), new(3, priority=WHOLE), new(4, priority=WHOLE))
    assert plan(ahead(1, 0.5), *burst).prefill == (2,)
    assert plan(StreamView(id=1, phase=Phase.PREFILL), *burst).prefill == (2,)  # the call's text is coming
    assert plan(*burst).prefill == (2, 3, 4)  # nothing more urgent open: all at once
    assert plan(new(1), new(5), new(6)).prefill == (1, 5, 6)  # live calls are never capped
    p = plan(new(2, priority=WHOLE), new(3, priority=STREAMING), new(4, priority=STREAMING))
    assert p.prefill == (3, 4)  # the API streams are unsafe (no audio yet): the whole file waits
