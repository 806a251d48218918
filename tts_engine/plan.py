"""plan_step: the scheduling policy as a pure function of plain data - who advances this engine step.

Each step, in order:
1. streams that were cancelled (or failed on the caller's side) are dropped: their slots return first;
2. new streams whose text has arrived are prefilled, and take their first frame in this same step -
   a new reply's first audio is never queued behind long replies;
3. running streams advance by playout slack, earliest deadline first (the least audio buffered
   ahead of real-time playback goes first), at most `max_batch` of them across both stages; a
   stream more than `max_lead_s` ahead is not stepped at all, so the device goes where it is needed
   and little is thrown away when a user barges in;
4. background work (prefix-cache warming) runs only when nothing else is runnable; with nothing at
   all to do the engine sleeps until the first held-back stream falls back to the lead limit.

A frame is two stages: predict (codebooks 1-15 + decode: the frame's audio) then talk (the talker
step that picks the next frame's codebook 0, which needs the next text token). A row that predicts
talks in the same step when its next text token is known, so a stream makes one frame per step.
The executor carries the plan out; rows that end on the way (EOS, frame cap, a failed stage) skip
the stages after.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .frames import FRAME_S

MIN_SLEEP_S = 0.001
# Nothing runnable and nothing held back: open_stream, push_text and cancel wake the engine, so this
# is only a backstop.
IDLE_SLEEP_S = 0.5


class Phase(enum.Enum):
    PREFILL = "prefill"  # waiting for the text its prompt needs
    PREDICT = "predict"  # a codebook-0 token waits for the rest of its frame
    TALK = "talk"  # a frame is done; the talker needs the next text-track token


@dataclass(frozen=True)
class StreamView:
    """What the planner knows of one stream."""

    id: int
    phase: Phase
    frames: int = 0  # frames delivered
    started_at: float | None = None  # when its first packet was ready; None before it
    prefill_ready: bool = False  # PREFILL: the text its prompt needs has arrived
    # The talk step after the stream's n-th frame needs text token n: it can run iff text_horizon is
    # None (the text is complete, or fed whole in the prompt) or n < text_horizon (tokens so far).
    text_horizon: int | None = None
    stopping: bool = False  # cancelled, or failed on the caller's side
    offline: bool = False  # synthesize(): no playback clock, so the lead limit does not apply

    def can_talk(self, frames: int) -> bool:
        return self.text_horizon is None or frames < self.text_horizon

    def lead(self, now: float) -> float:
        """Seconds of delivered audio still ahead of real-time playback (-inf before the first packet)."""
        if self.started_at is None:
            return float("-inf")
        return self.frames * FRAME_S - (now - self.started_at)


@dataclass(frozen=True)
class EngineState:
    streams: tuple[StreamView, ...]  # in admission order: equally urgent streams keep it
    max_batch: int
    max_lead_s: float | None
    background_jobs: int = 0


@dataclass(frozen=True)
class Plan:
    drop: tuple[int, ...] = ()  # stream ids, in the order each stage takes them
    prefill: tuple[int, ...] = ()
    predict: tuple[int, ...] = ()
    talk: tuple[int, ...] = ()  # after predict: rows that ended meanwhile are skipped
    background: bool = False  # run one background job
    sleep_s: float | None = None  # nothing to do: sleep this long (or until woken)


def plan_step(state: EngineState, now: float) -> Plan:
    drop = tuple(s.id for s in state.streams if s.stopping)
    live = [s for s in state.streams if not s.stopping]
    prefill = tuple(s.id for s in live if s.phase is Phase.PREFILL and s.prefill_ready)
    fresh = set(prefill)  # these predict in this same step: no packet yet, so the most urgent of all
    limit = state.max_lead_s
    rows = [s for s in live if _runnable(s, fresh) and (limit is None or s.offline or s.lead(now) <= limit)]
    rows.sort(key=lambda s: s.lead(now))  # stable: ties keep admission order
    advancing = rows[:state.max_batch]  # chosen across both stages, so a stream that is ahead never
    # advances beside a more urgent one just because they sit in different stages
    predict = tuple(s.id for s in advancing if s.phase is not Phase.TALK)
    talk = tuple(s.id for s in advancing if s.phase is Phase.TALK or s.can_talk(s.frames + 1))
    if drop or prefill or predict or talk:
        return Plan(drop=drop, prefill=prefill, predict=predict, talk=talk)
    if state.background_jobs:
        return Plan(background=True)
    return Plan(sleep_s=_idle_sleep(live, now, limit))


def _runnable(s: StreamView, fresh: set[int]) -> bool:
    if s.id in fresh or s.phase is Phase.PREDICT:
        return True
    return s.phase is Phase.TALK and s.can_talk(s.frames)


def _idle_sleep(live: list[StreamView], now: float, limit: float | None) -> float:
    """Until the first stream held back by the lead limit drops below it."""
    waits = [s.lead(now) - limit for s in live if limit is not None and _runnable(s, set()) and not s.offline]
    return max(MIN_SLEEP_S, min(waits)) if waits else IDLE_SLEEP_S
