"""OmniSTT / OmniLLM against FakeOmni: wire format, history shaping, cancellation and faults."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, APITimeoutError, llm

from agent.plugins.omni_config import LLMConfig, OmniConfig
from agent.plugins.omni_llm import OmniLLM
from agent.plugins.omni_stt import OmniSTT
from testing.fake_omni import FakeOmni

NO_RETRY = APIConnectOptions(max_retry=0)


@asynccontextmanager
async def served(fake: FakeOmni) -> AsyncIterator[str]:
    url = await fake.start()
    try:
        yield url
    finally:
        await fake.stop()


def speech_frames(sample_rate: int = 16000, seconds: float = 0.4) -> list[rtc.AudioFrame]:
    spf = sample_rate // 50  # 20 ms frames, as the VAD hands them over
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pcm = (0.3 * 32767 * np.sin(2 * math.pi * 220 * t)).astype(np.int16)
    return [
        rtc.AudioFrame(
            data=pcm[i : i + spf].tobytes(),
            sample_rate=sample_rate,
            num_channels=1,
            samples_per_channel=len(pcm[i : i + spf]),
        )
        for i in range(0, len(pcm), spf)
    ]


def chat(*turns: tuple[str, str]) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    for role, text in turns:
        ctx.add_message(role=role, content=text)  # type: ignore[arg-type]
    return ctx


async def collect(stream: llm.LLMStream) -> str:
    return (await stream.collect()).text


def last_body(fake: FakeOmni) -> dict[str, Any]:
    return fake.requests[-1]["json"]


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (OmniConfig, {"base_url": ""}, "base_url"),
        (OmniConfig, {"base_url": "127.0.0.1:8091"}, "http"),
        (OmniConfig, {"base_url": "http://x", "stt_style": "whisper"}, "stt_style"),
        (OmniConfig, {"base_url": "http://x", "request_timeout_s": -1}, "request_timeout_s"),
        (OmniConfig, {"base_url": "http://x", "api_key": ""}, "api_key"),
        (LLMConfig, {"max_tokens": 0}, "max_tokens"),
        (LLMConfig, {"temperature": -0.1}, "temperature"),
        (LLMConfig, {"top_p": 1.5}, "top_p"),
        (LLMConfig, {"seed": -3}, "seed"),
        (LLMConfig, {"history_max_turns": 0}, "history_max_turns"),
        (LLMConfig, {"history_max_tokens": -5}, "history_max_tokens"),
        (LLMConfig, {"extra_body": {"stream": False}}, "extra_body"),
    ],
)
def test_config_rejects_bad_values(cls: type, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_config_defaults_and_derived_values() -> None:
    cfg = OmniConfig(base_url="http://gpu:8091/")
    assert cfg.api_base == "http://gpu:8091/v1"
    assert OmniConfig(base_url="http://gpu:8091/v1").api_base == "http://gpu:8091/v1"
    assert cfg.stt_model_name == cfg.model
    assert cfg.transcription_prompt() == "Transcribe the English audio into text."
    assert cfg.transcription_prompt("de") == "Transcribe the German audio into text."
    assert (
        OmniConfig(base_url="http://x", stt_prompt="Write it down.").transcription_prompt("de")
        == "Write it down."
    )
    assert "markdown" in LLMConfig().system_prompt


# --------------------------------------------------------------------------------------- STT


async def test_stt_chat_audio_sends_wav_and_ignores_audio_chunks() -> None:
    fake = FakeOmni(transcripts=["hello there world"], emit_audio_modality_chunks=True)
    async with served(fake) as url:
        stt = OmniSTT(OmniConfig(base_url=url))
        frames = speech_frames(sample_rate=16000, seconds=0.4)
        ev = await stt.recognize(frames, conn_options=NO_RETRY)
        await stt.aclose()

    # the fake interleaved a base64 WAV "audio" chunk; any leak would show up in the text
    assert ev.alternatives[0].text == "hello there world"
    assert stt.last_request_ms is not None and stt.last_request_ms > 0
    body = last_body(fake)
    assert body["stream"] is True and body["modalities"] == ["text"]
    audio_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Transcribe the English audio into text."}
    url_ = audio_part["audio_url"]["url"]
    assert audio_part["type"] == "audio_url" and url_.startswith("data:audio/wav;base64,")
    with wave.open(io.BytesIO(base64.b64decode(url_.split(",", 1)[1]))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 6400)


async def test_stt_transcriptions_style_posts_multipart() -> None:
    seen: list[bytes] = []

    def transcribe(wav: bytes) -> str:
        seen.append(wav)
        return "good morning"

    fake = FakeOmni(transcripts=transcribe)
    async with served(fake) as url:
        stt = OmniSTT(OmniConfig(base_url=url, stt_style="transcriptions"))
        ev = await stt.recognize(speech_frames(sample_rate=48000), conn_options=NO_RETRY)
        await stt.aclose()

    assert ev.type.value == "final_transcript" and ev.alternatives[0].text == "good morning"
    rec = fake.requests[-1]
    assert rec["path"] == "/v1/audio/transcriptions"
    assert rec["form"]["model"] == OmniConfig(base_url="http://x").model and rec["form"]["language"] == "en"
    assert "prompt" not in rec["form"]  # the chat-style instruction is not a Whisper prompt
    with wave.open(io.BytesIO(seen[0])) as w:
        assert w.getframerate() == 48000


@pytest.mark.parametrize("style", ["chat_audio", "transcriptions"])
async def test_stt_empty_transcript_gives_empty_final(style: str) -> None:
    fake = FakeOmni(transcripts=["   "])
    async with served(fake) as url:
        stt = OmniSTT(OmniConfig(base_url=url, stt_style=style))  # type: ignore[arg-type]
        ev = await stt.recognize(speech_frames(), conn_options=NO_RETRY)
        await stt.aclose()
    assert ev.type.value == "final_transcript" and ev.alternatives[0].text == ""


# --------------------------------------------------------------------------------------- LLM


async def test_llm_streams_chunks_as_they_arrive() -> None:
    fake = FakeOmni(reply=lambda _: "one two three four five six", llm_token_interval_s=0.08)
    async with served(fake) as url:
        model = OmniLLM(OmniConfig(base_url=url))
        t0 = time.monotonic()
        arrivals: list[tuple[float, str]] = []
        usage = None
        async with model.chat(chat_ctx=chat(("user", "count"))) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    arrivals.append((time.monotonic() - t0, chunk.delta.content))
                if chunk.usage:
                    usage = chunk.usage
        await model.aclose()

    assert "".join(t for _, t in arrivals) == "one two three four five six"
    assert len(arrivals) == 6  # one delta per word, the audio-modality chunk filtered out
    assert arrivals[0][0] < arrivals[-1][0] - 0.3  # first word long before the last
    assert usage is not None and usage.completion_tokens == 6
    assert model.last_ttft_ms is not None and 0 < model.last_ttft_ms < arrivals[1][0] * 1000


async def test_llm_puts_system_prompt_first() -> None:
    fake = FakeOmni()
    async with served(fake) as url:
        model = OmniLLM(OmniConfig(base_url=url), LLMConfig(system_prompt="Be brief."))
        text = await collect(model.chat(chat_ctx=chat(("user", "hi there"))))
        msgs = last_body(fake)["messages"]
        assert msgs == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}]
        assert "hi there" in text

        # a context with its own system messages keeps them, merged into one leading message
        await collect(
            model.chat(chat_ctx=chat(("system", "Agent rules."), ("user", "a"), ("system", "Extra.")))
        )
        msgs = last_body(fake)["messages"]
        assert msgs[0] == {"role": "system", "content": "Agent rules.\n\nExtra."}
        assert [m["role"] for m in msgs] == ["system", "user"]
        await model.aclose()


def _long_history(pairs: int, chars: int = 40) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for i in range(pairs):
        turns += [("user", f"q{i} ".ljust(chars, "x")), ("assistant", f"a{i} ".ljust(chars, "y"))]
    return turns


async def test_llm_history_bounded_by_turns() -> None:
    fake = FakeOmni()
    async with served(fake) as url:
        model = OmniLLM(OmniConfig(base_url=url), LLMConfig(system_prompt="S", history_max_turns=3))
        await collect(
            model.chat(chat_ctx=chat(("assistant", "Hello!"), *_long_history(10), ("user", "newest")))
        )
        await model.aclose()
    msgs = last_body(fake)["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"].startswith("q8 ") and msgs[-1]["content"] == "newest"


def test_history_is_dropped_in_blocks_so_requests_share_their_prefix() -> None:
    from agent.plugins.omni_llm import first_kept_turn

    starts = [first_kept_turn(n, 12) for n in range(1, 60)]
    assert starts[:12] == [0] * 12  # up to the limit: everything
    for n, start in enumerate(starts, start=1):
        assert 7 <= n - start <= 12 or n <= 12  # never more than the limit, never under half of it
    # the start moves in jumps of 6, so of every 6 requests 5 extend the one before (prefix reuse)
    changes = [n for n in range(2, 60) if starts[n - 1] != starts[n - 2]]
    assert changes == [13, 19, 25, 31, 37, 43, 49, 55]
    assert [first_kept_turn(n, 1) for n in (1, 2, 5)] == [0, 1, 4]  # a limit of one: just the newest


async def test_llm_history_bounded_by_tokens() -> None:
    fake = FakeOmni()
    async with served(fake) as url:
        # 400-char messages ~ 100 tokens each: a 450-token budget holds the newest 2 turns
        model = OmniLLM(OmniConfig(base_url=url), LLMConfig(system_prompt="S", history_max_tokens=450))
        await collect(model.chat(chat_ctx=chat(*_long_history(6, chars=400), ("user", "newest"))))
        msgs = last_body(fake)["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert msgs[1]["content"].startswith("q4 ") and msgs[-1]["content"] == "newest"

        # the newest user message is kept even when it alone is over budget
        huge = "z" * 4000
        await collect(model.chat(chat_ctx=chat(*_long_history(2), ("user", huge))))
        msgs = last_body(fake)["messages"]
        assert msgs == [{"role": "system", "content": "S"}, {"role": "user", "content": huge}]
        await model.aclose()


async def test_llm_plain_string_content_flattens_lists() -> None:
    ctx = llm.ChatContext.empty()
    ctx.add_message(
        role="user", content=["look at this", llm.ImageContent(image="https://example.com/x.png")]
    )
    fake = FakeOmni()
    async with served(fake) as url:
        listy = OmniLLM(OmniConfig(base_url=url))
        await collect(listy.chat(chat_ctx=ctx))
        assert isinstance(last_body(fake)["messages"][1]["content"], list)
        plain = OmniLLM(OmniConfig(base_url=url, plain_string_content=True))
        await collect(plain.chat(chat_ctx=ctx))
        msgs = last_body(fake)["messages"]
        assert all(isinstance(m["content"], str) for m in msgs)
        assert msgs[1]["content"] == "look at this"
        await listy.aclose()
        await plain.aclose()


async def test_llm_sampling_options_in_request_body() -> None:
    fake = FakeOmni()
    cfg = LLMConfig(
        temperature=0.3,
        top_p=0.5,
        max_tokens=42,
        seed=7,
        send_modalities=False,
        extra_body={"repetition_penalty": 1.1},
    )
    async with served(fake) as url:
        model = OmniLLM(OmniConfig(base_url=url, model="Qwen/Qwen3-Omni-30B-A3B-Instruct"), cfg)
        await collect(model.chat(chat_ctx=chat(("user", "hi")), extra_kwargs={"stop": ["\n\n"]}))
        await model.aclose()
    body = last_body(fake)
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.5, 42, 7)
    assert body["repetition_penalty"] == 1.1 and body["stop"] == ["\n\n"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "modalities" not in body


async def test_llm_cancel_closes_http_stream() -> None:
    fake = FakeOmni(reply=lambda _: " ".join(["word"] * 50), llm_token_interval_s=0.1)
    async with served(fake) as url:
        model = OmniLLM(OmniConfig(base_url=url))
        stream = model.chat(chat_ctx=chat(("user", "talk")))
        first = await stream.__anext__()
        assert first.delta and first.delta.content
        t_cut = time.monotonic()
        await stream.aclose()  # what livekit does on barge-in
        t_seen = await fake.wait_for_disconnects(1, timeout=1.0)
        assert t_seen - t_cut < 1.0
        assert fake.streams_completed == 0 and fake.open_streams == 0
        await model.aclose()


async def test_stt_cancel_closes_http_stream() -> None:
    fake = FakeOmni(transcripts=["a slow transcript of many words"], llm_token_interval_s=0.2)
    async with served(fake) as url:
        stt = OmniSTT(OmniConfig(base_url=url))
        task = asyncio.create_task(stt.recognize(speech_frames(), conn_options=NO_RETRY))
        while fake.streams_opened == 0:
            await asyncio.sleep(0.01)
        t_cut = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await fake.wait_for_disconnects(1, timeout=1.0) - t_cut < 1.0
        await stt.aclose()


# ------------------------------------------------------------------------------------ faults


async def test_status_500_raises_api_status_error() -> None:
    fake = FakeOmni(transcripts=["x"])
    async with served(fake) as url:
        model, stt = OmniLLM(OmniConfig(base_url=url)), OmniSTT(OmniConfig(base_url=url))
        fake.fail_next("status_500")
        with pytest.raises(APIStatusError) as err:
            await collect(model.chat(chat_ctx=chat(("user", "hi")), conn_options=NO_RETRY))
        assert err.value.status_code == 500 and url in err.value.message
        fake.fail_next("status_500")
        with pytest.raises(APIStatusError):
            await stt.recognize(speech_frames(), conn_options=NO_RETRY)

        # retryable: the framework's own retry recovers from one 500
        fake.fail_next("status_500")
        retry_once = APIConnectOptions(max_retry=1, retry_interval=0.0)
        assert "hi" in await collect(model.chat(chat_ctx=chat(("user", "hi")), conn_options=retry_once))
        await model.aclose()
        await stt.aclose()


async def test_timeout_raises_api_timeout_error() -> None:
    fake = FakeOmni(transcripts=["x"], timeout_sleep_s=5.0)
    async with served(fake) as url:
        cfg = OmniConfig(base_url=url, request_timeout_s=0.3)
        model, stt = OmniLLM(cfg), OmniSTT(cfg)
        fake.fail_next("timeout", count=2)
        t0 = time.monotonic()
        with pytest.raises(APITimeoutError):
            await collect(model.chat(chat_ctx=chat(("user", "hi")), conn_options=NO_RETRY))
        with pytest.raises(APITimeoutError):
            await stt.recognize(speech_frames(), conn_options=NO_RETRY)
        assert time.monotonic() - t0 < 2.0
        await model.aclose()
        await stt.aclose()


async def test_refused_connection_raises_api_connection_error() -> None:
    fake = FakeOmni()
    url = await fake.start()
    await fake.stop()  # nothing listens on the port any more
    model, stt = OmniLLM(OmniConfig(base_url=url)), OmniSTT(OmniConfig(base_url=url))
    with pytest.raises(APIConnectionError) as err:
        await collect(model.chat(chat_ctx=chat(("user", "hi")), conn_options=NO_RETRY))
    assert not isinstance(err.value, APITimeoutError) and url in err.value.message
    with pytest.raises(APIConnectionError):
        await stt.recognize(speech_frames(), conn_options=NO_RETRY)
    await model.aclose()
    await stt.aclose()


async def test_disconnect_mid_stream_is_an_error_not_a_short_reply() -> None:
    fake = FakeOmni(transcripts=["one two three"], reply=lambda _: "alpha beta gamma delta")
    async with served(fake) as url:
        model = OmniLLM(OmniConfig(base_url=url))
        fake.fail_next("disconnect_mid_stream")
        received: list[str] = []
        with pytest.raises(APIConnectionError, match="mid-stream"):
            # default conn_options (3 retries): text already went out, so no retry may repeat it
            async with model.chat(chat_ctx=chat(("user", "hi"))) as stream:
                async for chunk in stream:
                    received.append(chunk.delta.content if chunk.delta and chunk.delta.content else "")
        assert "".join(received) == "alpha beta"
        assert len(fake.requests) == 1 and fake.aborts == 1

        stt = OmniSTT(OmniConfig(base_url=url))
        fake.fail_next("disconnect_mid_stream")
        with pytest.raises(APIConnectionError):
            await stt.recognize(speech_frames(), conn_options=NO_RETRY)
        await model.aclose()
        await stt.aclose()


async def test_fault_every_counts_faulty_turns_and_keeps_the_count_when_switched_off() -> None:
    fake = FakeOmni(transcripts=["x"] * 5)
    async with served(fake) as url:
        stt = OmniSTT(OmniConfig(base_url=url))
        fake.fault_every(2)  # the 2nd turn's STT gets FAULT_CYCLE's first fault: a 500
        await stt.recognize(speech_frames(), conn_options=NO_RETRY)
        with pytest.raises(APIStatusError):
            await stt.recognize(speech_frames(), conn_options=NO_RETRY)
        fake.fault_every(0)  # off: the count stays readable (the system test reads it after this)
        assert fake.faulty_turns == 1
        for _ in range(2):
            await stt.recognize(speech_frames(), conn_options=NO_RETRY)
        assert fake.faulty_turns == 1
        fake.fault_every(5)  # on again: counting starts over
        assert fake.faulty_turns == 0
        await stt.aclose()


# ---------------------------------------------------------------------------- fake fidelity


async def test_fake_validates_requests_like_a_server() -> None:
    fake = FakeOmni()
    async with served(fake) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/chat/completions", data=b"{not json") as r:
            assert r.status == 400 and "message" in (await r.json())["error"]
        async with http.post(
            f"{url}/chat/completions", json={"model": "Qwen/Qwen3-Omni-30B-A3B-Instruct"}
        ) as r:
            assert r.status == 400 and "messages" in (await r.json())["error"]["message"]
        async with http.post(
            f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        ) as r:
            body = await r.json()
            assert r.status == 200 and body["object"] == "chat.completion"
        async with http.get(f"{url}/models") as r:
            assert (await r.json())["data"][0]["id"] == "Qwen/Qwen3-Omni-30B-A3B-Instruct"
        async with http.get(url.removesuffix("/v1") + "/health") as r:
            assert r.status == 200
    with pytest.raises(ValueError, match="stop"):
        fake.fail_next("refuse")
    await asyncio.sleep(0)
