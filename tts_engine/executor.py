"""StepExecutor: carries out each engine step as plan_step (plan.py) decides it.

Per step: take the text each stream's caller pushed, ask plan_step who advances, then run the
stages batched across streams and hand the results to the streams' channels. The executor is the
only caller of the channels' engine face and of the device stages. One device->host read-back per
frame: predict copies codes and audio together; an EOS chosen by talk is seen in the next predict's
codes (that row's extra work is dropped). A failure inside a stage fails only the streams of that
batch; the engine goes on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from .config import SchedulerConfig
from .errors import StreamError, TTSEngineError
from .graph_runner import StepRunner
from .plan import EngineState, Phase, Plan, Priority, plan_step
from .runner import ModelRunner
from .slots import SlotPool
from .utterance import Utterance

log = logging.getLogger(__name__)

# Positions a whole-text prompt takes beyond its text tokens (role 3, voice prefix <= 6, tts_eos,
# codec bos: 11 at most), with room left for a few frames.
WHOLE_TEXT_PROMPT_EXTRA = 16


class StepExecutor:
    def __init__(self, runner: ModelRunner, steps: StepRunner, sched: SchedulerConfig, slots: SlotPool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.runner = runner
        self.steps = steps
        self.sched = sched
        self.slots = slots
        self.clock = clock
        self.active: dict[int, Utterance] = {}  # stream id -> utterance, in admission order
        self.step_index = 0
        self.background: list[Callable[[], None]] = []
        # late packets of the classes someone listens to as they arrive (a whole file is never late);
        # every key exists from the start, so stats() on another thread never sees the dict grow
        self.underruns: Counter[Priority] = Counter(dict.fromkeys(Priority, 0))
        self.packets = 0

    def admit(self, utterances: list[Utterance]) -> None:
        for utt in utterances:
            utt.channel.admitted(self.step_index + 1)
            self.active[utt.id] = utt

    def active_count(self) -> int:
        return len(self.active)

    def active_by_priority(self) -> Counter[Priority]:
        return Counter(u.priority for u in list(self.active.values()))

    def abort_all(self, error: BaseException) -> None:
        for utt in list(self.active.values()):
            self._end(utt, error=error, quiet=True)

    # ---- one step ------------------------------------------------------------------------------

    def step(self) -> float | None:
        """Run one engine step. Returns how long to sleep when there was nothing to do, else None."""
        self.step_index += 1
        self._take_text()
        plan = plan_step(self.state(), self.clock())
        self.run(plan)
        return plan.sleep_s

    def state(self) -> EngineState:
        views = tuple(u.view(u.channel.stats.first_packet_at, u.channel.should_stop()) for u in self.active.values())
        return EngineState(streams=views, max_batch=self.sched.max_batch, max_lead_s=self.sched.max_lead_s,
                           guard_s=self.sched.guard_s, background_jobs=len(self.background))

    def run(self, plan: Plan) -> None:
        for stream_id in plan.drop:
            self._end(self.active[stream_id], "cancelled")
        # each stage takes the plan's rows still running and in that stage once the previous one is done
        self._prefill(self._rows(plan.prefill, Phase.PREFILL))
        self._predict(self._rows(plan.predict, Phase.PREDICT))
        self._talk(self._rows(plan.talk, Phase.TALK))
        if plan.background:
            job = self.background.pop(0)
            try:
                job()
            except Exception:  # warming is an optimisation: its failure must not stop the engine
                log.exception("TTS background job failed")

    def _rows(self, ids: tuple[int, ...], phase: Phase) -> list[Utterance]:
        return [u for i in ids if (u := self.active.get(i)) is not None and u.phase is phase]

    def _take_text(self) -> None:
        for utt in list(self.active.values()):
            channel = utt.channel
            if channel.should_stop():
                continue  # the plan drops it
            try:
                new = utt.absorb(*channel.take_text())
            except TTSEngineError as exc:
                self._end(utt, error=exc)
                continue
            except Exception as exc:  # one stream's text must never take the engine thread down
                log.exception("TTS stream %d: its text could not be tokenized", utt.id)
                self._end(utt, error=StreamError(f"text failed: {exc.__class__.__name__}: {exc}"))
                continue
            if new:
                channel.note_tokens(new)

    # ---- stages --------------------------------------------------------------------------------

    def _end(self, utt: Utterance, reason: str = "error", error: BaseException | None = None,
             quiet: bool = False) -> None:
        self.active.pop(utt.id, None)
        self.slots.release(utt.id)  # a caller that opens its next stream on seeing this end must find a free slot
        if error is None:
            utt.channel.finish(reason)
            return
        if not quiet:
            log.warning("TTS stream %d failed: %s", utt.id, error)
        utt.channel.fail(error)

    def _fail_batch(self, batch: list[Utterance], stage: str, exc: Exception) -> None:
        log.exception("TTS %s stage failed for %d stream(s)", stage, len(batch))
        for utt in batch:
            self._end(utt, error=StreamError(f"{stage} failed: {exc.__class__.__name__}: {exc}"))

    def _prefill(self, batch: list[Utterance]) -> None:
        r = self.runner
        for utt in batch:
            try:
                if not utt.streaming and len(utt.tokens) + WHOLE_TEXT_PROMPT_EXTRA > r.cfg.max_context:
                    raise StreamError(f"text of {len(utt.tokens)} tokens does not fit max_context {r.cfg.max_context}")
                utt.position = r.prefill(utt.slot, utt.voice, utt.tokens[0] if utt.streaming else None,
                                         None if utt.streaming else utt.tokens, utt.seed)
            except Exception as exc:
                self._fail_batch([utt], "prefill", exc)
                continue
            utt.phase = Phase.PREDICT
            utt.channel.stepped()

    def _predict(self, batch: list[Utterance]) -> None:
        if not batch:
            return
        try:
            codes, audio = self.steps.predict([u.slot for u in batch])
            # the one read-back per frame: codes (EOS check, stream.codes) and audio together
            codes_host = codes.cpu().numpy()
            audio_host = audio.float().cpu().numpy()
        except Exception as exc:
            self._fail_batch(batch, "predict", exc)
            return
        for i, utt in enumerate(batch):
            utt.channel.stepped()
            if codes_host[i, 0] == self.runner.eos_id:
                self._end(utt, "eos")
                continue
            packets = utt.packets(audio_host[i], self.clock())
            late = utt.channel.deliver(packets, codes_host[i].astype(np.int64), self.step_index, audio_host[i])
            if utt.priority is not Priority.WHOLE:
                self.underruns[utt.priority] += late
            self.packets += len(packets)
            if utt.frames >= utt.frame_limit():
                self._end(utt, "frame_cap")
            else:
                utt.phase = Phase.TALK

    def _talk(self, rows: list[Utterance]) -> None:
        r = self.runner
        batch = []
        for utt in rows:
            if utt.position + 1 >= r.cfg.max_context:
                self._end(utt, "frame_cap")  # the talker's KV window is full
            else:
                batch.append(utt)
        if not batch:
            return
        text_ids: list[int] = []
        for u in batch:
            text_id = u.text_id_for_talk(r.prompts.tts_eos_id, r.prompts.tts_pad_id)
            assert text_id is not None  # plan_step lets a row talk only when its next text token is known
            text_ids.append(text_id)
        try:
            self.steps.talk([u.slot for u in batch], text_ids, [u.position for u in batch])
        except Exception as exc:
            self._fail_batch(batch, "talk", exc)
            return
        for utt in batch:
            utt.position += 1
            utt.phase = Phase.PREDICT
            utt.channel.stepped()
