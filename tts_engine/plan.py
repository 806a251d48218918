"""plan_step: the scheduling policy as a pure function of plain data - who advances this engine step.

Each step, in order:
1. streams that were cancelled (or failed on the caller's side) are dropped: their slots return first;
2. new streams whose text has arrived are prefilled, and take their first frame in this same step -
   a new reply's first audio is never queued behind long replies;
3. running streams advance ordered by (priority class, playout slack): a live call's reply first,
   then API streams read as they decode, then whole files; within a class earliest deadline first
   (the least audio buffered ahead of real-time playback goes first). At most `max_batch` of them
   advance, across both stages; a played stream more than `max_lead_s` ahead is not stepped at all,
   so the device goes where it is needed and little is thrown away when a user barges in (whole
   files have no playback to stay close to);
4. background work (prefix-cache warming) runs only when nothing else is runnable; with nothing at
   all to do the engine sleeps until the first held-back stream falls back to the lead limit.

The guard rule: every row a step carries makes the batched step slower, and on a device near its
limit that is what would make a live call underrun. So a class joins a step (its rows and its
prefills) only when every runnable stream of the classes before it has at least `guard_s` of audio
buffered ahead of playout; a stream just opened has none, so it runs with its betters alone until
it has. A guarded class prefills at most one new stream per step while a more urgent stream is open,
because a whole text's prompt is the costliest row there is. Lower classes starve only while the
device cannot keep the urgent ones `guard_s` ahead - which is the point.

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
# New streams of guarded classes one step prefills while a more urgent stream is open (see above).
GUARDED_PREFILLS = 1


class Priority(enum.IntEnum):
    """Scheduling classes; a lower value goes first (from 1, so that no class is falsy)."""

    LIVE = 1  # a call's reply: its deadline is the listener's playout
    STREAMING = 2  # an API request whose audio is sent (and maybe played) as it decodes
    WHOLE = 3  # a whole file: the caller waits for the end, so only throughput matters


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
    offline: bool = False  # synthesize(): the caller takes the whole waveform, no playback clock
    priority: Priority = Priority.LIVE

    @property
    def paced(self) -> bool:
        """Played as it arrives, so the lead limit applies: not synthesize(), not a whole file."""
        return not self.offline and self.priority is not Priority.WHOLE

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
    guard_s: float  # lead every runnable stream of the classes before a class needs for it to join
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
    going = [s for s in state.streams if not s.stopping]
    ready = {s.id for s in going if s.phase is Phase.PREFILL and s.prefill_ready}
    limit = state.max_lead_s
    runnable = [s for s in going if _runnable(s, ready) and (limit is None or not s.paced or s.lead(now) <= limit)]
    last = _last_class(runnable, state.guard_s, now)
    prefill = _prefills([s for s in runnable if s.id in ready and s.priority <= last], going)
    # a prefilled stream predicts in this same step: no packet yet, so the most urgent of its class
    rows = [s for s in runnable if s.priority <= last and (s.id not in ready or s.id in prefill)]
    rows.sort(key=lambda s: (s.priority, s.lead(now)))  # stable: ties keep admission order
    advancing = rows[:state.max_batch]  # chosen across both stages, so a stream that is ahead never
    # advances beside a more urgent one just because they sit in different stages
    predict = tuple(s.id for s in advancing if s.phase is not Phase.TALK)
    talk = tuple(s.id for s in advancing if s.phase is Phase.TALK or s.can_talk(s.frames + 1))
    if drop or prefill or predict or talk:
        return Plan(drop=drop, prefill=prefill, predict=predict, talk=talk)
    if state.background_jobs:
        return Plan(background=True)
    return Plan(sleep_s=_idle_sleep(going, now, limit))


def _runnable(s: StreamView, ready: set[int]) -> bool:
    if s.id in ready or s.phase is Phase.PREDICT:
        return True
    return s.phase is Phase.TALK and s.can_talk(s.frames)


def _last_class(runnable: list[StreamView], guard_s: float, now: float) -> Priority:
    """The least urgent class that joins this step: the first one with a runnable stream under the
    guard (its own streams are what it must catch up), else all of them."""
    for priority in Priority:
        if any(s.priority is priority and s.lead(now) < guard_s for s in runnable):
            return priority
    return max(Priority)


def _prefills(ready: list[StreamView], going: list[StreamView]) -> tuple[int, ...]:
    """The ready streams to prefill, most urgent class first; those below a more urgent open stream
    (running, or waiting for its text) take at most GUARDED_PREFILLS of this step."""
    top = min((s.priority for s in going), default=Priority.LIVE)
    chosen: list[int] = []
    guarded = 0
    for s in sorted(ready, key=lambda s: s.priority):
        if s.priority > top:
            if guarded == GUARDED_PREFILLS:
                break
            guarded += 1
        chosen.append(s.id)
    return tuple(chosen)


def _idle_sleep(going: list[StreamView], now: float, limit: float | None) -> float:
    """Until the first stream held back by the lead limit drops below it."""
    waits = [s.lead(now) - limit for s in going if limit is not None and _runnable(s, set()) and s.paced]
    return max(MIN_SLEEP_S, min(waits)) if waits else IDLE_SLEEP_S
