"""StepExecutor: decides, each engine step, which utterances run which phase, and runs them batched.

Order within a step: drop cancelled streams (their slots free first), prefill new utterances (so a
new utterance's first frame is never queued behind long replies), then one batched `predict` for
every utterance holding a codebook-0 token, then one batched `talk` for every utterance whose next
text token is known. One device->host read-back per frame: the predict phase copies codes and audio
together; an EOS chosen by `talk` is seen in the next predict's codes (that row's work is dropped).
A failure inside a phase fails only the streams of that batch; the engine goes on.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .errors import StreamError, TTSEngineError
from .runner import ModelRunner, kv_bucket
from .utterance import Phase, Utterance

log = logging.getLogger(__name__)


class StepExecutor:
    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.active: list[Utterance] = []

    def admit(self, utterances: list[Utterance]) -> None:
        self.active.extend(utterances)

    def active_count(self) -> int:
        return len(self.active)

    def has_runnable_work(self) -> bool:
        r = self.runner
        for utt in self.active:
            if utt.stream._should_stop() or utt.phase is Phase.PREDICT:
                return True
            if utt.phase is Phase.PREFILL and utt.ready_for_prefill():
                return True
            if utt.phase is Phase.TALK and utt.text_id_for_talk(r.prompts.tts_eos_id, r.prompts.tts_pad_id) is not None:
                return True
        return False

    def abort_all(self, error: BaseException) -> list[Utterance]:
        released, self.active = self.active, []
        for utt in released:
            utt.stream._fail(error)
        return released

    # ---- one step ------------------------------------------------------------------------------

    def step(self) -> list[Utterance]:
        """Run one engine step; return the utterances that ended (their slots can be reused)."""
        ended: list[Utterance] = []
        for utt in list(self.active):
            if utt.stream._should_stop():
                self._end(utt, ended, "cancelled")
                continue
            try:
                utt.absorb_text()
            except TTSEngineError as exc:
                self._end(utt, ended, error=exc)
        self._prefill([u for u in self.active if u.phase is Phase.PREFILL and u.ready_for_prefill()], ended)
        self._predict([u for u in self.active if u.phase is Phase.PREDICT], ended)
        self._talk(ended)
        return ended

    def _end(self, utt: Utterance, ended: list[Utterance], reason: str = "error",
             error: BaseException | None = None) -> None:
        if utt in self.active:
            self.active.remove(utt)
            ended.append(utt)
        if error is not None:
            log.warning("TTS stream %d failed: %s", utt.stream.id, error)
            utt.stream._fail(error)
        else:
            utt.stream._finish(reason)

    def _fail_batch(self, batch: list[Utterance], ended: list[Utterance], phase: str, exc: Exception) -> None:
        log.exception("TTS %s phase failed for %d stream(s)", phase, len(batch))
        for utt in batch:
            self._end(utt, ended, error=StreamError(f"{phase} failed: {exc.__class__.__name__}: {exc}"))

    def _prefill(self, batch: list[Utterance], ended: list[Utterance]) -> None:
        r = self.runner
        for utt in batch:
            try:
                if utt.streaming:
                    embeds = r.prompts.streaming_prompt(utt.voice, utt.tokens[0])
                else:
                    embeds = r.prompts.full_text_prompt(utt.voice, utt.tokens)
                if embeds.shape[1] + 2 > r.cfg.max_context:
                    raise StreamError(f"prompt of {embeds.shape[1]} positions exceeds max_context {r.cfg.max_context}")
                r.prefill(utt.slot, embeds, utt.seed)
            except Exception as exc:
                self._fail_batch([utt], ended, "prefill", exc)
                continue
            utt.position = embeds.shape[1]
            utt.phase = Phase.PREDICT
            utt.stream.stats.steps += 1

    def _predict(self, batch: list[Utterance], ended: list[Utterance]) -> None:
        if not batch:
            return
        r = self.runner
        try:
            slots = torch.tensor([u.slot for u in batch], device=r.device)
            codes, audio = r.predict(slots)
            # the one read-back per frame: codes (for EOS and stream.codes) and audio together
            codes_host = codes.cpu().numpy()
            audio_host = audio.float().cpu().numpy()
        except Exception as exc:
            self._fail_batch(batch, ended, "predict", exc)
            return
        for i, utt in enumerate(batch):
            utt.stream.stats.steps += 1
            if codes_host[i, 0] == r.eos_id:
                self._end(utt, ended, "eos")
                continue
            utt.deliver(codes_host[i].astype(np.int64), audio_host[i])
            if utt.frames >= utt.frame_limit():
                self._end(utt, ended, "frame_cap")
            else:
                utt.phase = Phase.TALK

    def _talk(self, ended: list[Utterance]) -> None:
        r = self.runner
        batch, text_ids = [], []
        for utt in self.active:
            if utt.phase is not Phase.TALK:
                continue
            text_id = utt.text_id_for_talk(r.prompts.tts_eos_id, r.prompts.tts_pad_id)
            if text_id is None:
                continue  # waiting for the LLM's next words
            if utt.position + 1 >= r.cfg.max_context:
                self._end(utt, ended, "frame_cap")
                continue
            batch.append(utt)
            text_ids.append(text_id)
        if not batch:
            return
        try:
            dev = r.device
            positions = [u.position for u in batch]
            r.talk(torch.tensor([u.slot for u in batch], device=dev), torch.tensor(text_ids, device=dev),
                   torch.tensor(positions, device=dev), kv_bucket(max(positions) + 1, r.cfg.max_context))
        except Exception as exc:
            self._fail_batch(batch, ended, "talk", exc)
            return
        for utt in batch:
            utt.position += 1
            utt.phase = Phase.PREDICT
            utt.stream.stats.steps += 1
