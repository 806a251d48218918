"""Duplex controller: the one place that owns barge-in and the conversation's turn state.

It alone pauses, resumes and clears the output and cancels engine streams; what a barge-in is, its
outcomes and the policies (immediate cut / minimum speech / minimum speech without resume) are the
typed contract in agent/session/barge_in.py. Transports react to the output's PlaybackEvents.

States: LISTENING (user's turn) -> THINKING (reply being generated, nothing audible yet) ->
SPEAKING (reply audible) -> back to LISTENING; INTERRUPTED while a barge-in is being resolved.

Barge-in: while THINKING or SPEAKING, the output is silenced SYNCHRONOUSLY (pause: the queue stays,
nothing more is heard) on whichever comes first: a microphone frame that rises through
`early_pause_dbfs` in any 5 ms of it and that the echo gate let through (so it is louder than the
agent's own echo: the user's first 20 ms, before Silero has a whole 32 ms window to judge), or the
first VAD window whose speech probability reaches `early_pause_threshold` - a window or two before
the VAD confirms speech. If the VAD's start of speech does not follow (a click, a cough:
`EARLY_PAUSE_COLD_WINDOWS` windows in a row that are quiet by both measures, or `EARLY_PAUSE_MAX_S`),
the reply plays on from where it paused. On the VAD's start of speech the barge-in is recorded, and then:
- min_speech_s == 0: it cuts at once - clears the output queue, cancels the engine streams, and
  interrupts the session (which cancels the LLM request and the TTS task);
- min_speech_s > 0 (backchannel tolerance): the controller cuts once the VAD has heard that much
  speech (not counting the silence Silero waits out before its end of speech, which livekit's own
  interruption counts: that one stays configured above it, as a backstop); if the user stops sooner
  it was a false interruption and the policy decides: MinimumSpeech plays on from where it paused,
  MinimumSpeechNoResume cuts anyway.
Echo never reaches this point: the EchoGate removes it from the microphone stream before the VAD.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from livekit.agents import vad as lk_vad
from livekit.agents.voice import AgentSession

from ..plugins.tts_plugin import EngineTTS
from .barge_in import (
    PAUSED_AT_START_OF_SPEECH,
    BargeIn,
    BargeInOutcome,
    BargeInPolicy,
    ImmediateCut,
    MinimumSpeech,
    MinimumSpeechNoResume,
)
from .clock import monotonic_from_wall

log = logging.getLogger(__name__)


class DuplexState(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"


# An early pause that the VAD does not confirm is let go after this many windows (32 ms each) in a
# row below the threshold - Silero's own start needs consecutive hot windows, so two cold ones mean
# this burst will not become speech - or after EARLY_PAUSE_MAX_S in any case.
EARLY_PAUSE_COLD_WINDOWS = 2
EARLY_PAUSE_MAX_S = 0.3
# a loud microphone frame is a rise when no loud one came within this many frames before it (1: the
# frame before; the half absorbs frames that arrive unevenly)
RISE_GAP_FRAMES = 1.5
SILERO_ACTIVATION = 0.5  # the speech probability at which Silero itself starts counting speech


@dataclass(frozen=True)
class DuplexConfig:
    barge_in_min_speech_s: float = 0.0  # speech needed before a barge-in counts (backchannel tolerance)
    false_interruption: Literal["resume", "drop"] = "resume"
    # speech probability of one VAD window that silences the agent before the VAD confirms speech
    # (below the VAD's own 0.5: Silero's smoothed probability is still rising through the first
    # window of a word); None: silence it only at the VAD's start of speech (a window or two later)
    early_pause_threshold: float | None = 0.3
    # level (dBFS, the RMS of any 5 ms of a microphone frame: echo_gate.LEVEL_BLOCK_S) of a frame
    # louder than the agent's echo that silences the agent at once: -40 dBFS is ~20 dB under
    # conversational speech at a microphone and above a quiet room after the browser's noise
    # suppression; None: only the VAD pauses early
    early_pause_dbfs: float | None = -40.0

    def __post_init__(self) -> None:
        if not 0 <= self.barge_in_min_speech_s <= 5:
            raise ValueError("barge_in_min_speech_s must be in [0, 5] seconds")
        if self.false_interruption not in ("resume", "drop"):
            raise ValueError("false_interruption must be 'resume' or 'drop'")
        if self.early_pause_threshold is not None and not 0 < self.early_pause_threshold < 1:
            raise ValueError("early_pause_threshold must be in (0, 1), or None to pause at the VAD's start of speech")
        if self.early_pause_dbfs is not None and not -90 <= self.early_pause_dbfs < 0:
            raise ValueError("early_pause_dbfs must be in [-90, 0) dBFS, or None for no level-triggered pause")

    @property
    def early_pause_rms(self) -> float | None:
        return None if self.early_pause_dbfs is None else 10 ** (self.early_pause_dbfs / 20)

    def policy(self) -> BargeInPolicy:
        if self.barge_in_min_speech_s <= 0:
            return ImmediateCut()
        if self.false_interruption == "resume":
            return MinimumSpeech(self.barge_in_min_speech_s)
        return MinimumSpeechNoResume(self.barge_in_min_speech_s)


def _window_seconds(ev: lk_vad.VADEvent) -> float:
    """How much audio the VAD judged for this event (one 32 ms Silero window at 16 kHz)."""
    return sum(f.samples_per_channel / f.sample_rate for f in ev.frames) if ev.frames else 0.032


@dataclass
class EarlyPause:
    """The output silenced on one hot VAD window, before the VAD confirms speech (monotonic seconds)."""

    paused_at: float
    audible_until: float  # the frame in flight when it paused still sounds until then
    # the middle of the hot window's audio (the speech began somewhere in it): the onset is no later,
    # however late the VAD's own backdated start of speech comes when inference runs behind
    speech_by: float
    cause: str  # "level" (a loud microphone frame) or "vad" (a hot VAD window)
    cold_windows: int = 0


class DuplexController:
    def __init__(self, session: AgentSession, tts: EngineTTS, config: DuplexConfig | None = None,
                 on_barge_in: Callable[[BargeIn], None] | None = None) -> None:
        self.session = session
        self.tts = tts
        self.config = config or DuplexConfig()
        self.on_barge_in = on_barge_in
        self.state = DuplexState.LISTENING
        self.pending: BargeIn | None = None
        # verdict on the speech that started the pending barge-in: True = a tolerated backchannel whose
        # transcript must not become a user turn (a committed turn would cut the reply after all)
        self._verdict: asyncio.Future[bool] | None = None
        self.history: list[BargeIn] = []
        self.transitions: list[tuple[float, DuplexState]] = []
        self.early: EarlyPause | None = None  # silenced on a hot window, the VAD's start not yet seen
        self.early_pauses = 0
        self.early_pauses_by_level = 0  # of early_pauses, set off by a loud microphone frame
        self.early_pauses_released = 0  # not followed by speech: the reply played on
        # the last microphone frame over early_pause_dbfs (monotonic); a pause takes a rise, not a level
        self._loud_at = float("-inf")

    @property
    def policy(self) -> BargeInPolicy:
        return self.config.policy()

    @property
    def output(self) -> Any:
        """The session's current AudioOutput (a room's or ours): pause / resume / clear_buffer."""
        return self.session.output.audio

    def attach(self) -> None:
        self.session.on("agent_state_changed", self._on_agent_state)
        self.session.on("user_state_changed", self._on_user_state)

    def _set(self, state: DuplexState) -> None:
        if state is not self.state:
            self.state = state
            self.transitions.append((time.monotonic(), state))

    # ---- session events (synchronous: this is the fast path) -----------------------------------

    def _on_agent_state(self, ev: Any) -> None:
        new = ev.new_state
        if new == "thinking":
            self._set(DuplexState.THINKING)
        elif new == "speaking":
            if self.pending is None:
                self._set(DuplexState.SPEAKING)
        elif new in ("listening", "idle"):
            if self.pending is not None:
                self._finish_pending(BargeInOutcome.CUT)  # livekit confirmed the barge-in and stopped the reply
            self._release_early("the reply ended")  # a paused output must never outlive its reply
            self._set(DuplexState.LISTENING)

    def _on_user_state(self, ev: Any) -> None:
        if ev.new_state == "speaking":
            self._user_started(onset_at=monotonic_from_wall(getattr(ev, "created_at", None)))
        elif ev.new_state == "listening" and self.pending is not None and self.pending.outcome is BargeInOutcome.PENDING:
            self._false_interruption()

    def on_microphone_frame(self, block_levels: Sequence[float], block_s: float) -> None:
        """A microphone frame the echo gate let through while the agent's audio plays (so it is not
        the agent's echo), as the RMS of each `block_s` of it: the level-triggered early pause."""
        floor = self.config.early_pause_rms
        if floor is None:
            return
        first_loud = next((i for i, level in enumerate(block_levels) if level >= floor), None)
        if first_loud is None:
            return
        now = time.monotonic()
        # the echo gate reports only the frames it lets through while the agent plays, so the frame
        # before a rise may never reach here (gated as echo, or heard while nothing played): a rise is
        # known by the gap since the last loud frame, not by a quiet frame reported in between
        rose = now - self._loud_at > RISE_GAP_FRAMES * len(block_levels) * block_s
        self._loud_at = now
        if rose and self.early is None:
            # the frame ends now: the speech began within its first loud block
            blocks_from_the_end = len(block_levels) - first_loud
            self._pause_early(now, speech_by=now - (blocks_from_the_end - 0.5) * block_s, cause="level")

    def _pause_early(self, now: float, speech_by: float, cause: str) -> None:
        if self.pending is not None or self.state not in (DuplexState.THINKING, DuplexState.SPEAKING):
            return
        self.early = EarlyPause(paused_at=now, audible_until=max(now, self._audible_until(now)),
                                speech_by=speech_by, cause=cause)
        self.output.pause()  # silence first, let the VAD decide
        self.early_pauses += 1
        self.early_pauses_by_level += cause == "level"

    def on_vad_event(self, ev: lk_vad.VADEvent) -> None:
        """Every event of the session's VAD, as it is emitted (agent/session/vad_tap.py): the early pause, and
        the confirmation of a barge-in that needs `barge_in_min_speech_s` of speech."""
        if ev.type != lk_vad.VADEventType.INFERENCE_DONE:
            return
        if self.pending is not None:
            self._confirm_if_long_enough(ev)
            return
        threshold = self.config.early_pause_threshold
        hot = ev.probability >= (threshold if threshold is not None else SILERO_ACTIVATION)
        early = self.early
        now = time.monotonic()
        if early is None:
            if threshold is not None and hot and not ev.speaking:
                self._pause_early(now, speech_by=now - ev.inference_duration - _window_seconds(ev) / 2, cause="vad")
            return
        # a window is quiet when the VAD heard no speech in it and no loud frame came during it: Silero's
        # probability can trail a real onset by a window or two, the level does not
        loud_lately = now - self._loud_at <= _window_seconds(ev) + ev.inference_duration
        early.cold_windows = 0 if hot or loud_lately else early.cold_windows + 1
        if early.cold_windows >= EARLY_PAUSE_COLD_WINDOWS or now - early.paused_at > EARLY_PAUSE_MAX_S:
            self._release_early("no speech followed")

    def _confirm_if_long_enough(self, ev: lk_vad.VADEvent) -> None:
        """Cut once the user has really spoken `barge_in_min_speech_s`. Silero's speech_duration goes on
        counting through the silence it waits before END_OF_SPEECH, so a short "mm-hm" followed by
        that silence would reach the minimum too: the trailing silence is taken off."""
        pending, needed = self.pending, self.policy.min_speech_s
        if pending is None or pending.outcome is not BargeInOutcome.PENDING or needed <= 0:
            return
        if ev.speech_duration - ev.raw_accumulated_silence >= needed:
            log.info("barge-in confirmed after %.2f s of speech", needed)
            self.cut()

    def _release_early(self, why: str) -> None:
        if self.early is None:
            return
        self.early = None
        self.early_pauses_released += 1
        log.info("early pause released (%s): playing on", why)
        self.output.resume()

    def _audible_until(self, now: float) -> float:
        return getattr(self.output, "audible_until", now)

    def _user_started(self, onset_at: float | None = None) -> None:
        if self.state not in (DuplexState.THINKING, DuplexState.SPEAKING) or self.pending is not None:
            self._release_early("the agent was not talking")  # (a pending barge-in took the pause over)
            return
        now = time.monotonic()
        self.output.pause()  # silence first, decide second (already silent after an early pause)
        self.pending = self._new_barge_in(now, onset_at)
        self._set(DuplexState.INTERRUPTED)
        log.info("barge-in detected while %s", self.pending.while_state)
        if self.policy.min_speech_s <= 0:
            self.cut()
        else:
            self._verdict = asyncio.get_running_loop().create_future()

    def _false_interruption(self) -> None:
        assert self.pending is not None
        outcome = self.policy.on_short_speech()
        if outcome is BargeInOutcome.FALSE_RESUMED:
            log.info("false interruption (speech shorter than %.2f s): resuming", self.policy.min_speech_s)
            pending = self.pending
            self.pending = None
            pending.outcome = outcome
            self._give_verdict(drop_transcript=True)
            self._record(pending)
            self.output.resume()
            self._set(DuplexState.SPEAKING if pending.while_state == "speaking" else DuplexState.THINKING)
        else:
            self.cut(outcome=outcome)

    # ---- the cut -------------------------------------------------------------------------------

    def _new_barge_in(self, now: float, onset_at: float | None = None) -> BargeIn:
        early, self.early = self.early, None  # the barge-in takes over the early pause
        silent_at = early.audible_until if early is not None else max(now, self._audible_until(now))
        streams = [s.engine_stream for s in self.tts.active_streams if s.engine_stream is not None]
        known = [t for t in (onset_at, early.speech_by if early is not None else None) if t is not None]
        onset_at = min([*known, now]) if known else None
        return BargeIn(detected_at=now, silent_at=silent_at, while_state=self.state.value, onset_at=onset_at,
                       paused_at=early.paused_at if early is not None else now,
                       paused_by=early.cause if early is not None else PAUSED_AT_START_OF_SPEECH,
                       speech=self.session.current_speech, engine_streams=streams)

    def cut(self, outcome: BargeInOutcome = BargeInOutcome.CUT) -> None:
        """Hard barge-in: empty the output queue, cancel the reply's TTS and LLM. Safe to repeat."""
        now = time.monotonic()
        barge_in = self.pending or self._new_barge_in(now)
        self.pending = barge_in
        speech = barge_in.speech
        still_current = speech is None or speech is self.session.current_speech
        if still_current:
            self.output.clear_buffer()  # synchronous: whatever was queued is gone now
        for engine_stream in barge_in.engine_streams:
            engine_stream.cancel()  # the engine drops it at its next step boundary
        if speech is not None and not speech.interrupted:
            speech.interrupt(force=True)  # cancels that reply's LLM request and TTS task
        self.output.resume()  # empty (or already playing a newer reply): the next reply must be heard
        self._finish_pending(outcome, cut_at=now)
        self._set(DuplexState.LISTENING)

    def stop_replies(self) -> None:
        """The session is closing: stop every engine stream still making a reply."""
        for synthesis in list(self.tts.active_streams):
            if synthesis.engine_stream is not None:
                synthesis.engine_stream.cancel()

    def _finish_pending(self, outcome: BargeInOutcome, cut_at: float | None = None) -> None:
        pending, self.pending = self.pending, None
        self._give_verdict(drop_transcript=False)
        if pending is None:
            return
        pending.outcome = outcome
        pending.cut_at = cut_at if cut_at is not None else time.monotonic()
        self._record(pending)

    def _give_verdict(self, drop_transcript: bool) -> None:
        if self._verdict is not None and not self._verdict.done():
            self._verdict.set_result(drop_transcript)

    async def keep_transcript(self, timeout: float = 1.0) -> bool:
        """For the STT node: False when this final transcript is a backchannel the agent talked through.

        The STT adapter's VAD and the session's VAD see the end of speech in either order, so a
        transcript of a candidate segment waits (briefly) for the controller's verdict."""
        verdict = self._verdict
        if verdict is None:
            return True
        try:
            drop = await asyncio.wait_for(asyncio.shield(verdict), timeout)
        except TimeoutError:
            return True
        if self._verdict is verdict:
            self._verdict = None
        if drop:
            log.info("backchannel tolerated: its transcript makes no user turn")
        return not drop

    def _record(self, barge_in: BargeIn) -> None:
        self.history.append(barge_in)
        if self.on_barge_in is not None:
            self.on_barge_in(barge_in)
