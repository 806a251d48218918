"""Per-turn latency traces: one JSON line per turn in traces/<session>.jsonl (schema: traces/README.md).

Every time is time.monotonic(), stamped when the event is handled (session events fire
synchronously). A turn is opened at the user's VAD end of speech - or at a barge-in - so no stage
can start before its turn and no duration can be negative.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..session.barge_in import BargeInOutcome

log = logging.getLogger(__name__)

SAME_END_S = 0.25  # two VAD end-of-speech detections this close together are one end


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start) * 1000, 2)


@dataclass
class Turn:
    turn_id: int
    opened_at: float  # monotonic
    wall_ts: float  # time.time() at open
    opened_by: str  # "end_of_speech" or "barge_in"
    vad_end_at: float | None = None  # when a VAD reported the end of speech (detection time)
    speech_end_at: float | None = None  # when the speech really ended: the session VAD's end, backdated
    # by the silence it waited for (and its inference time) before it could say so
    stt_started_at: float | None = None
    stt_done_at: float | None = None
    stt_ms: float | None = None
    stt_queue_ms: float | None = None  # of stt_ms, waiting for a busy server
    user_text: str = ""
    llm_generation: object | None = None  # the LLM request answering this turn (not recorded)
    llm_started_at: float | None = None
    llm_first_token_at: float | None = None
    llm_queue_ms: float | None = None  # of llm_ttft_ms, waiting for a busy server
    llm_done_at: float | None = None
    tts_synthesis_id: str | None = None
    tts_first_text_at: float | None = None
    tts_first_audio_at: float | None = None
    published_at: float | None = None  # first agent frame handed to the transport
    agent_text: str = ""
    interrupted: bool = False
    # the user went on talking before the reply was heard, and a new reply to all of it replaced this
    # one (livekit adds no message for a reply that never played)
    superseded: bool = False
    barge_in_outcome: str | None = None
    barge_in_paused_by: str | None = None  # BargeIn.paused_by: what silenced the reply first
    cancel_to_silence_ms: float | None = None
    onset_to_silence_ms: float | None = None  # the barge-in's true speech onset -> no more agent audio
    barge_in_detect_ms: float | None = None  # true speech onset -> the VAD's START_OF_SPEECH
    barge_in_clock: dict[str, float] = field(default_factory=dict)  # its onset/detected/cut/silent stamps
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, session_id: str) -> dict[str, Any]:
        # speech ended before its transcription started, whichever VAD noticed first (livekit runs
        # two, and a loaded machine can make the session's one late)
        # (the true end, when the session's VAD reported one, is earlier than both)
        ended = min((t for t in (self.speech_end_at, self.vad_end_at, self.stt_started_at) if t is not None),
                    default=None)
        v2v = _ms(ended, self.published_at)
        stt, ttft = self.stt_ms, _ms(self.llm_started_at, self.llm_first_token_at)
        ttfa = _ms(self.tts_first_text_at, self.tts_first_audio_at)
        inside = [x for x in (stt, ttft, ttfa) if x is not None]
        rec: dict[str, Any] = {
            "session_id": session_id, "turn_id": self.turn_id, "ts": round(self.wall_ts, 3),
            "user_text": self.user_text, "agent_text": self.agent_text,
            "vad_to_stt_ms": _ms(ended, self.stt_done_at), "stt_ms": stt,
            "llm_ttft_ms": ttft, "tts_ttfa_ms": ttfa,
            "tts_first_to_publish_ms": _ms(self.tts_first_audio_at, self.published_at),
            "voice_to_voice_ms": v2v,
            "interrupted": self.interrupted, "superseded": self.superseded,
            "cancel_to_silence_ms": self.cancel_to_silence_ms if self.interrupted else None,
            "error": "; ".join(self.errors) if self.errors else None,
            # extras
            "opened_by": self.opened_by, "barge_in_outcome": self.barge_in_outcome,
            "barge_in_paused_by": self.barge_in_paused_by,
            "stt_to_llm_ms": _ms(self.stt_done_at, self.llm_started_at),
            "llm_to_tts_ms": _ms(self.llm_first_token_at, self.tts_first_text_at),
            "llm_total_ms": _ms(self.llm_started_at, self.llm_done_at),
            "pipeline_overhead_ms": round(v2v - sum(inside), 2) if v2v is not None and len(inside) == 3 else None,
            "stt_queue_ms": self.stt_queue_ms, "llm_queue_ms": self.llm_queue_ms,
            "endpointing_ms": self.endpointing_ms(),
            "onset_to_silence_ms": self.onset_to_silence_ms if self.interrupted else None,
            "barge_in_detect_ms": self.barge_in_detect_ms if self.interrupted else None,
            "clock": self.clock(),
            **self.extra,
        }
        return rec


    def endpointing_ms(self) -> float | None:
        """How long the agent took to decide the turn was over, model time excluded: the VAD's silence
        (true end of speech -> its END_OF_SPEECH) plus, once the transcript is in, the end-of-turn
        wait before the LLM request (livekit's endpointing delay, and the turn model's verdict)."""
        silence = _ms(self.speech_end_at, self.vad_end_at)
        if silence is None:
            return None
        after_transcript = _ms(self.stt_done_at, self.llm_started_at)
        return round(silence + max(0.0, after_transcript or 0.0), 2)

    def clock(self) -> dict[str, float]:
        """This turn's moments in seconds of the agent host's monotonic clock: a client on the same
        host (scripts/bench_duplex.py) lines them up with what it played and heard."""
        stamps = {"speech_end": self.speech_end_at, "vad_end": self.vad_end_at, "stt_started": self.stt_started_at,
                  "stt_done": self.stt_done_at, "llm_started": self.llm_started_at,
                  "llm_first_token": self.llm_first_token_at,
                  "tts_first_audio": self.tts_first_audio_at, "published": self.published_at,
                  **(self.barge_in_clock if self.interrupted else {})}
        return {k: round(v, 4) for k, v in stamps.items() if v is not None}


class TraceWriter:
    """Appends one JSON line per turn to a session's file; thread-safe, flushed per line."""

    def __init__(self, directory: str | Path, session_id: str) -> None:
        self.path = Path(directory) / f"{session_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class TurnTracer:
    """Collects stage timestamps from the pipeline's hooks into turns and writes finished turns."""

    def __init__(self, session_id: str, writer: TraceWriter | None,
                 on_turn: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.session_id = session_id
        self.writer = writer
        self.on_turn = on_turn  # e.g. the page's latency panel, metrics
        self.turn: Turn | None = None  # the turn being collected or answered
        self.incoming: Turn | None = None  # user speech that arrived while a reply was still going on
        self.closing: Turn | None = None  # interrupted turn waiting for its (truncated) agent text
        self._next_id = 1
        self.records: list[dict[str, Any]] = []

    def _open(self, opened_by: str, now: float) -> Turn:
        self.turn = Turn(turn_id=self._next_id, opened_at=now, wall_ts=time.time(), opened_by=opened_by)
        self._next_id += 1
        return self.turn

    def _replying(self) -> bool:
        t = self.turn
        return t is not None and (t.llm_started_at is not None or t.published_at is not None)

    # ---- hooks ---------------------------------------------------------------------------------

    def _speech_end(self, at: float) -> Turn:
        """One end of speech, seen by the session's VAD or by the STT adapter's own VAD (livekit
        runs two). Detections within SAME_END_S are the same end (the earlier wins); a later one
        means the user paused and went on, and the last end counts. Speech while a reply is going
        on (a backchannel the agent talked through) starts the NEXT turn, not this one's end."""
        if self.turn is not None and self._replying():
            if self.incoming is None:
                self.incoming = Turn(turn_id=0, opened_at=at, wall_ts=time.time(), opened_by="end_of_speech")
            turn = self.incoming
        else:
            turn = self.turn or self._open("end_of_speech", at)
        if turn.vad_end_at is None or at - turn.vad_end_at > SAME_END_S:
            turn.vad_end_at = at
        else:
            turn.vad_end_at = min(turn.vad_end_at, at)
        return turn

    def user_speech_ended(self, ended_at: float | None = None) -> None:
        """The session's VAD reported the end of speech now; `ended_at` (monotonic) is when the
        speech really ended, if known (the VAD backdates its END_OF_SPEECH by the silence it waited on)."""
        now = time.monotonic()
        turn = self._speech_end(now)
        if ended_at is not None:  # this detection is the turn's (latest) end, whichever VAD saw it first
            turn.speech_end_at = min(ended_at, now)

    def stt_finished(self, duration_ms: float | None, text: str, error: str | None = None,
                     queue_ms: float | None = None) -> None:
        now = time.monotonic()
        started = now - (duration_ms or 0.0) / 1000
        if not text.strip() and not error:
            return  # an empty transcript (noise, a split-off breath) makes no turn and changes none
        t = self._speech_end(started)
        t.stt_started_at = started
        t.stt_done_at = now
        t.stt_ms = None if duration_ms is None else round(duration_ms, 2)
        t.stt_queue_ms = queue_ms
        if error:
            t.errors.append(f"stt: {error}")
            self.close(reason="stt_error")
        else:
            t.user_text = (t.user_text + " " + text).strip()

    def llm_started(self, generation: object) -> None:
        t = self.turn
        if t is None:
            return
        if t.llm_generation is not None and t.llm_generation is not generation:
            if t.published_at is not None:
                return  # a further request after the reply was heard answers nothing new here
            t = self._supersede(t)
        if t.llm_started_at is None:
            t.llm_generation = generation
            t.llm_started_at = time.monotonic()

    def _supersede(self, t: Turn) -> Turn:
        """A new reply started before this turn's was heard: the user's further speech (waiting in
        `incoming`) is the next turn, which the new reply answers. This one is written now."""
        t.superseded = True
        self.close(reason="superseded")
        return self.turn or self._open("continued", time.monotonic())

    def _answering(self, generation: object) -> Turn | None:
        """The turn whose reply `generation` is (the current one, or one just cut and closing)."""
        return next((t for t in (self.turn, self.closing) if t is not None and t.llm_generation is generation), None)

    def end_of_turn_predicted(self, probability: float) -> None:
        """The turn model's verdict on the user's turn being collected (agent/session/turn_end.py)."""
        if self.turn is not None:
            self.turn.extra["end_of_turn_probability"] = round(probability, 3)

    def llm_queued(self, generation: object, queue_ms: float) -> None:
        t = self._answering(generation)
        if t is not None and t.llm_queue_ms is None:
            t.llm_queue_ms = queue_ms

    def llm_first_token(self, generation: object) -> None:
        t = self._answering(generation)
        if t is not None and t.llm_first_token_at is None:
            t.llm_first_token_at = time.monotonic()

    def llm_finished(self, generation: object, error: str | None = None) -> None:
        t = self._answering(generation)
        if t is not None:
            t.llm_done_at = time.monotonic()
            if error:
                t.errors.append(f"llm: {error}")

    def tts_timing(self, synthesis_id: str, first_text_at: float | None, first_audio_at: float | None,
                   error: str | None) -> None:
        """A synthesis reports at its first audio and at its end; its numbers belong to the turn that
        first heard from it (a cut reply's final report must not land on the next turn)."""
        owner = next((t for t in (self.turn, self.closing) if t is not None and t.tts_synthesis_id == synthesis_id),
                     None)
        if owner is None:
            t = self.turn
            if t is None or t.tts_synthesis_id is not None or first_audio_at is None and not error:
                return
            owner = t
            owner.tts_synthesis_id = synthesis_id
            owner.tts_first_text_at = first_text_at
            owner.tts_first_audio_at = first_audio_at
        if error:
            owner.errors.append(f"tts: {error}")

    def playback_started(self) -> None:
        if self.turn is not None and self.turn.published_at is None:
            self.turn.published_at = time.monotonic()

    def agent_message(self, text: str, interrupted: bool) -> None:
        """The reply as it entered the chat history (only what was spoken if interrupted): it ends the turn."""
        if self.closing is not None:
            self.closing.agent_text = text
            self._write(self.closing, "barge_in")
            self.closing = None
            return
        if self.turn is not None:
            self.turn.agent_text = text
            self.turn.interrupted = self.turn.interrupted or interrupted
            self.close(reason="interrupted" if interrupted else "done")

    def barge_in(self, cancel_to_silence_ms: float, outcome: BargeInOutcome, onset_to_silence_ms: float | None = None,
                 detect_ms: float | None = None, clock: dict[str, float] | None = None,
                 paused_by: str | None = None) -> None:
        """A barge-in closes the turn being answered and opens the user's new one."""
        now = time.monotonic()
        t = self.turn
        if t is None:
            return
        t.barge_in_outcome = outcome.value
        t.barge_in_paused_by = paused_by
        if outcome is BargeInOutcome.FALSE_RESUMED:
            return
        t.interrupted = True
        t.cancel_to_silence_ms = round(cancel_to_silence_ms, 2)
        t.onset_to_silence_ms = None if onset_to_silence_ms is None else round(onset_to_silence_ms, 2)
        t.barge_in_detect_ms = None if detect_ms is None else round(detect_ms, 2)
        t.barge_in_clock = dict(clock or {})
        self.flush_closing()
        self.closing, self.turn = t, None
        self._promote_incoming() or self._open("barge_in", now)

    def flush_closing(self) -> None:
        """Write an interrupted turn whose agent text never came (nothing had been spoken)."""
        if self.closing is not None:
            self._write(self.closing, "barge_in")
            self.closing = None

    def agent_idle(self) -> int | None:
        """The agent is listening again. A turn that failed gets no assistant message: close it now.
        Returns the id of a turn whose reply was under way (its assistant message is due at once),
        for `close_if_stale`; None when no reply was: a turn a barge-in just opened is still being
        spoken by the user and must not be timed out while they talk."""
        t = self.turn
        if t is not None and t.errors and (t.llm_started_at is not None or t.stt_done_at is not None):
            self.close(reason="error")
            return None
        return self.turn.turn_id if self.turn is not None and self._replying() else None

    def close_if_stale(self, turn_id: int) -> None:
        """Close a turn that is still waiting for an agent message which is not coming."""
        t = self.turn
        if t is not None and t.turn_id == turn_id and self._replying():
            self.close(reason="no_agent_message")

    def error(self, message: str) -> None:
        if self.turn is not None:
            self.turn.errors.append(message)

    def close(self, reason: str = "done") -> dict[str, Any] | None:
        t, self.turn = self.turn, None
        self._promote_incoming()
        if t is None or (t.vad_end_at is None and not t.errors and not t.interrupted):
            return None
        return self._write(t, reason)

    def _promote_incoming(self) -> Turn | None:
        """The reply is over: speech that came during it becomes the current turn."""
        incoming, self.incoming = self.incoming, None
        if incoming is not None:
            incoming.turn_id = self._next_id
            self._next_id += 1
            self.turn = incoming
        return incoming

    def _write(self, t: Turn, reason: str) -> dict[str, Any]:
        rec = t.record(self.session_id)
        rec["closed_by"] = reason
        self.records.append(rec)
        if self.writer is not None:
            self.writer.write(rec)
        if self.on_turn is not None:
            try:
                self.on_turn(rec)
            except Exception:  # a broken listener must not lose the trace
                log.exception("turn listener failed")
        return rec
