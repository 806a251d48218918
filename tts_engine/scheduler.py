"""StepExecutor: the GPU priority scheduler. Each engine step it decides who advances, in order:

1. frees and cancellations (their slots return first);
2. new utterances: prefill, and their first frame in this same step - a new reply's first audio is
   never queued behind long replies;
3. running streams by playout slack, earliest deadline first (least audio buffered ahead of
   real-time playback goes first), at most `max_batch` streams per step; a stream more than
   `max_lead_s` ahead is not stepped at all, so the device goes where it is needed and little is
   thrown away when a user barges in;
4. background work (prefix-cache warming) only when nothing else is runnable.
One device->host read-back per frame: predict copies codes and audio together; an EOS chosen by
talk is seen in the next predict's codes (that row's extra work is dropped). A failure inside a
stage fails only the streams of that batch; the engine goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from .config import SchedulerConfig
from .errors import StreamError, TTSEngineError
from .graph_runner import StepRunner
from .runner import ModelRunner
from .utterance import Phase, Utterance

log = logging.getLogger(__name__)


class StepExecutor:
    def __init__(self, runner: ModelRunner, steps: StepRunner, sched: SchedulerConfig,
                 release: Callable[[Utterance], None]) -> None:
        self.runner = runner
        self.release = release  # frees the slot; called BEFORE the caller sees the stream end
        self.steps = steps
        self.sched = sched
        self.active: list[Utterance] = []
        self.step_index = 0
        self.background: list[Callable[[], None]] = []
        self.underruns = 0
        self.packets = 0

    def admit(self, utterances: list[Utterance]) -> None:
        for utt in utterances:
            utt.stream.stats.admitted_step = self.step_index + 1
        self.active.extend(utterances)

    def active_count(self) -> int:
        return len(self.active)

    def abort_all(self, error: BaseException) -> list[Utterance]:
        released, self.active = self.active, []
        for utt in released:
            self.release(utt)
            utt.stream._fail(error)
        return released

    # ---- one step ------------------------------------------------------------------------------

    def step(self) -> tuple[list[Utterance], float | None]:
        """Run one engine step. Returns (ended utterances, seconds to sleep if nothing ran or None)."""
        self.step_index += 1
        ended: list[Utterance] = []
        for utt in list(self.active):
            if utt.stream._should_stop():
                self._end(utt, ended, "cancelled")
                continue
            try:
                utt.absorb_text()
            except TTSEngineError as exc:
                self._end(utt, ended, error=exc)
            except Exception as exc:  # one stream's text must never take the engine thread down
                log.exception("TTS stream %d: its text could not be tokenized", utt.stream.id)
                self._end(utt, ended, error=StreamError(f"text failed: {exc.__class__.__name__}: {exc}"))
        now = time.monotonic()
        ran = self._prefill([u for u in self.active if u.phase is Phase.PREFILL and u.ready_for_prefill()], ended)
        advancing = self._advancing(now)
        ran |= self._predict([u for u in advancing if u.phase is Phase.PREDICT], ended)
        # a row that just predicted talks in the same step: one whole frame per step
        ran |= self._talk([u for u in advancing if u.phase is Phase.TALK and u in self.active and self._runnable(u)],
                          ended)
        if ran or any(u.stream._should_stop() for u in self.active):
            return ended, None
        if self.background:
            self.background.pop(0)()
            return ended, None
        return ended, self._idle_delay(now)

    def _lead(self, utt: Utterance, now: float) -> float:
        """Seconds of delivered audio still ahead of real-time playback (-inf before the first packet)."""
        first = utt.stream.stats.first_packet_at
        if first is None:
            return float("-inf")
        return utt.frames * 0.08 - (now - first)

    def _runnable(self, utt: Utterance) -> bool:
        if utt.phase is Phase.TALK:
            return utt.text_id_for_talk(self.runner.prompts.tts_eos_id, self.runner.prompts.tts_pad_id) is not None
        return utt.phase is Phase.PREDICT

    def _advancing(self, now: float) -> list[Utterance]:
        """The streams that advance this step: earliest deadline first (new utterances lead), at most
        max_batch of them whichever stage each is in - chosen across both stages, so a stream that is
        ahead never advances beside a more urgent one just because they sit in different stages."""
        limit = self.sched.max_lead_s
        rows = [u for u in self.active if u.phase in (Phase.PREDICT, Phase.TALK) and self._runnable(u)
                and (limit is None or u.bypass_lead or self._lead(u, now) <= limit)]
        rows.sort(key=lambda u: self._lead(u, now))
        return rows[:self.sched.max_batch]

    def _idle_delay(self, now: float) -> float:
        """How long the engine may sleep: until the first held-back stream drops below max_lead."""
        limit = self.sched.max_lead_s
        waits = [self._lead(u, now) - limit for u in self.active
                 if limit is not None and self._runnable(u) and not u.bypass_lead]
        return max(0.001, min(waits)) if waits else 0.5

    # ---- stages --------------------------------------------------------------------------------

    def _end(self, utt: Utterance, ended: list[Utterance], reason: str = "error",
             error: BaseException | None = None) -> None:
        if utt in self.active:
            self.active.remove(utt)
            ended.append(utt)
        self.release(utt)  # a caller that opens its next stream on seeing this end must find a free slot
        if error is not None:
            log.warning("TTS stream %d failed: %s", utt.stream.id, error)
            utt.stream._fail(error)
        else:
            utt.stream._finish(reason)

    def _fail_batch(self, batch: list[Utterance], ended: list[Utterance], stage: str, exc: Exception) -> None:
        log.exception("TTS %s stage failed for %d stream(s)", stage, len(batch))
        for utt in batch:
            self._end(utt, ended, error=StreamError(f"{stage} failed: {exc.__class__.__name__}: {exc}"))

    def _prefill(self, batch: list[Utterance], ended: list[Utterance]) -> bool:
        r = self.runner
        for utt in batch:
            try:
                if not utt.streaming and len(utt.tokens) + 16 > r.cfg.max_context:
                    raise StreamError(f"text of {len(utt.tokens)} tokens does not fit max_context {r.cfg.max_context}")
                utt.position = r.prefill(utt.slot, utt.voice, utt.tokens[0] if utt.streaming else None,
                                         None if utt.streaming else utt.tokens, utt.seed)
            except Exception as exc:
                self._fail_batch([utt], ended, "prefill", exc)
                continue
            utt.phase = Phase.PREDICT
            utt.stream.stats.steps += 1
        return bool(batch)

    def _predict(self, batch: list[Utterance], ended: list[Utterance]) -> bool:
        if not batch:
            return False
        try:
            codes, audio = self.steps.predict([u.slot for u in batch])
            # the one read-back per frame: codes (EOS check, stream.codes) and audio together
            codes_host = codes.cpu().numpy()
            audio_host = audio.float().cpu().numpy()
        except Exception as exc:
            self._fail_batch(batch, ended, "predict", exc)
            return True
        for i, utt in enumerate(batch):
            utt.stream.stats.steps += 1
            if codes_host[i, 0] == self.runner.eos_id:
                self._end(utt, ended, "eos")
                continue
            late = utt.deliver(codes_host[i].astype(np.int64), audio_host[i], self.step_index)
            self.underruns += late
            self.packets += 4
            if utt.frames >= utt.frame_limit():
                self._end(utt, ended, "frame_cap")
            else:
                utt.phase = Phase.TALK
        return True

    def _talk(self, rows: list[Utterance], ended: list[Utterance]) -> bool:
        r = self.runner
        batch = []
        for utt in rows:
            if utt.position + 1 >= r.cfg.max_context:
                self._end(utt, ended, "frame_cap")  # the talker's KV window is full
            else:
                batch.append(utt)
        if not batch:
            return False
        text_ids: list[int] = []
        for u in batch:
            text_id = u.text_id_for_talk(r.prompts.tts_eos_id, r.prompts.tts_pad_id)
            assert text_id is not None  # only rows whose next text token is known get here
            text_ids.append(text_id)
        try:
            self.steps.talk([u.slot for u in batch], text_ids, [u.position for u in batch])
        except Exception as exc:
            self._fail_batch(batch, ended, "talk", exc)
            return True
        for utt in batch:
            utt.position += 1
            utt.phase = Phase.PREDICT
            utt.stream.stats.steps += 1
        return True
