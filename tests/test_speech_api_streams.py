"""The speech API's streams: the WebSocket protocol (text word by word gives the audio of the text at
once), cancel and disconnect free engine slots at once (200 aborted requests leak none), the
per-key limit answers 429 and a full engine 503, both with Retry-After."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import numpy as np
import openai
import pytest
import torch
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_speech_api import KEY, OTHER_KEY, TEXT, engine_stream_pcm, make_engine, speech_body

from speech_api import SERVICE_KEY, BackgroundServer, SpeechApiConfig, make_app

torch.set_num_threads(1)

LONG_TEXT = " ".join(["This reply goes on for a while, so that there is time to walk away from it."] * 6)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    cfg = SpeechApiConfig(api_keys=(KEY, OTHER_KEY), max_streams_per_key=2, retry_after_key_s=3)
    with make_engine(tiny_checkpoint) as engine, BackgroundServer(make_app(engine, cfg)) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_engine(server):
    return server.app[SERVICE_KEY].engine


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def wait_released(engine, server, timeout: float = 5.0) -> None:
    """Until the engine holds no stream and the API tracks none."""
    deadline = time.monotonic() + timeout
    service = server.app[SERVICE_KEY]
    while engine.stats()["active_streams"] or service.streams:
        assert time.monotonic() < deadline, (engine.stats(), service.streams)
        await asyncio.sleep(0.01)


async def next_json(ws) -> dict:
    """The next JSON event other than a word timestamp (the word-by-word test checks those)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 30)
        if msg.type == aiohttp.WSMsgType.TEXT:
            event = json.loads(msg.data)
            if event.get("type") != "word":
                return event
            continue
        assert msg.type == aiohttp.WSMsgType.BINARY, msg


async def utterance(ws, chunks: list[str], voice: str = "ryan", words: list | None = None) -> tuple[bytes, dict]:
    """One utterance over an open socket: its audio and its done event; word events go to `words`,
    each with the seconds of audio received before it."""
    await ws.send_json({"type": "start", "voice": voice})
    assert (await next_json(ws))["type"] == "started"
    for chunk in chunks:
        await ws.send_json({"type": "text", "text": chunk})
    await ws.send_json({"type": "end"})
    audio = bytearray()
    while True:
        msg = await asyncio.wait_for(ws.receive(), 30)
        if msg.type == aiohttp.WSMsgType.BINARY:
            audio += msg.data
            continue
        event = json.loads(msg.data)
        if event["type"] == "word":
            if words is not None:
                words.append((event, len(audio) / 2 / 24000))
            continue
        assert event["type"] == "done", event
        return bytes(audio), event


# ---- WebSocket -----------------------------------------------------------------------------------

async def test_websocket_word_by_word_equals_all_at_once(server, api_engine):
    reference = engine_stream_pcm(api_engine, TEXT)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url + "/v1/audio/speech/stream",
                                                                  headers=auth()) as ws:
        chunks = [w + " " for w in TEXT.split(" ")]
        words, words_again = [], []
        by_word, done = await utterance(ws, chunks, words=words)
        at_once, done_again = await utterance(ws, [TEXT], words=words_again)  # a second one, same socket
    assert np.array_equal(np.frombuffer(by_word, "<i2"), reference)
    assert by_word == at_once
    # word timestamps: one per word, the same however the text came, monotonic and covering the audio
    assert [e["word"] for e, _ in words] == TEXT.split() and done["words"] == len(words)
    assert [e for e, _ in words] == [e for e, _ in words_again]
    starts, ends = [e["start_s"] for e, _ in words], [e["end_s"] for e, _ in words]
    assert starts[0] == 0 and ends[-1] == pytest.approx(len(reference) / 24000)
    assert all(a < b for a, b in zip(starts, starts[1:], strict=False)) and starts[1:] == ends[:-1]
    assert all(end <= received + 1e-6 for (e, received), end in zip(words, ends, strict=True))  # never ahead
    assert done["reason"] == "frame_cap" and done["frames"] == len(reference) // 1920
    assert done["audio_seconds"] == len(reference) / 24000 and done["ttfa_ms"] >= 0
    assert (done["utterance"], done_again["utterance"]) == (1, 2)
    await wait_released(api_engine, server)


async def test_websocket_refusals_leave_the_socket_usable(server, api_engine):
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url + "/v1/audio/speech/stream",
                                                                  headers=auth()) as ws:
        for message, code in [({"type": "text", "text": "hi"}, "no_utterance"),
                              ({"type": "end"}, "no_utterance"),
                              ({"type": "sing"}, "invalid_message"),
                              ({"type": "start", "voice": "alloy"}, "unknown_voice"),
                              ({"type": "start", "voice": "ryan", "response_format": "mp3"}, "unsupported_format"),
                              ({"type": "start", "voice": "ryan", "speed": 2}, "unknown_parameter"),
                              ({"type": "start", "voice": "ryan", "model": "whisper-1"}, "model_not_found"),
                              ({"type": "start", "voice": "ryan", "timestamps": "char"}, "invalid_value"),
                              ([1, 2], "invalid_message")]:
            await ws.send_json(message)
            event = await next_json(ws)
            assert event["type"] == "error" and event["error"]["code"] == code, (message, event)
        await ws.send_str("not json")
        assert (await next_json(ws))["error"]["code"] == "invalid_message"
        await ws.send_bytes(b"\x00\x01")
        assert (await next_json(ws))["error"]["code"] == "invalid_message"
        await ws.send_json({"type": "start", "voice": "vivian", "language": "english"})
        assert (await next_json(ws))["type"] == "started"
        await ws.send_json({"type": "start", "voice": "ryan"})
        assert (await next_json(ws))["error"]["code"] == "utterance_in_progress"
        await ws.send_json({"type": "text", "text": 5})
        assert (await next_json(ws))["error"]["code"] == "invalid_type"
        await ws.send_json({"type": "text", "text": "x" * 4001})  # over the engine's max_text_chars
        assert (await next_json(ws))["error"]["code"] == "input_too_long"
        event = await next_json(ws)
        while event["type"] == "error":  # the failed stream reports once more before its done
            event = await next_json(ws)
        assert event["type"] == "done" and event["reason"] == "error"
        audio, done = await utterance(ws, ["Still works."])
        assert audio and done["reason"] == "frame_cap"
    await wait_released(api_engine, server)


async def test_websocket_cancel_and_close_free_the_slot_at_once(server, api_engine):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url + "/v1/audio/speech/stream", headers=auth()) as ws:
            await ws.send_json({"type": "start", "voice": "ryan"})
            await next_json(ws)
            await ws.send_json({"type": "text", "text": LONG_TEXT})
            await ws.send_json({"type": "end"})
            assert (await ws.receive()).type == aiohttp.WSMsgType.BINARY
            await ws.send_json({"type": "cancel"})
            event = await next_json(ws)
            assert event == {**event, "type": "done", "reason": "cancelled"}
            assert api_engine.stats()["active_streams"] == 0  # freed before "done" was sent
        async with http.ws_connect(server.url + "/v1/audio/speech/stream", headers=auth()) as ws:
            await ws.send_json({"type": "start", "voice": "ryan"})
            await next_json(ws)
            await ws.send_json({"type": "text", "text": LONG_TEXT})  # never ended: the engine waits for more
            assert (await ws.receive()).type == aiohttp.WSMsgType.BINARY
        await wait_released(api_engine, server, timeout=2.0)  # closing the socket cancelled it


async def test_websocket_idle_timeout_closes(api_engine):
    cfg = SpeechApiConfig(ws_idle_timeout_s=0.3)
    with BackgroundServer(make_app(api_engine, cfg)) as srv:
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.url + "/v1/audio/speech/stream") as ws:
            await ws.send_json({"type": "start", "voice": "ryan"})
            await next_json(ws)
            await ws.send_json({"type": "text", "text": "Then nothing more"})
            event = await next_json(ws)
            assert event["error"]["code"] == "idle_timeout"
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await wait_released(api_engine, srv)


# ---- disconnects ---------------------------------------------------------------------------------

async def _abort_after_first_bytes(http: aiohttp.ClientSession, url: str, i: int) -> int:
    body = speech_body(input=LONG_TEXT, response_format=("pcm", "mp3", "wav", "opus")[i % 4],
                       stream_format="sse" if i % 5 == 0 else "audio")
    key = KEY if i % 2 else OTHER_KEY
    if i % 7 == 0:  # every 7th goes away before the status line: right after sending its request
        return await _abort_before_answer(url, body, key)
    async with http.post(url, json=body, headers=auth(key)) as resp:
        assert await resp.content.readany()
        resp.close()  # drops the connection mid-body
        return resp.status


async def _abort_before_answer(url: str, body: dict, key: str) -> int:
    host, port = url.split("//")[1].split("/")[0].split(":")
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: " + str(len(payload)).encode()
                 + b"\r\n\r\n" + payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    return 200  # nothing came back, and nothing may stay behind (checked after all of them)


async def test_200_aborted_requests_leak_no_engine_stream(server, api_engine, caplog):
    caplog.set_level(logging.WARNING)
    url = server.url + "/v1/audio/speech"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for start in range(0, 200, 2):  # two at a time: each key's limit is 2
            statuses += await asyncio.gather(*(_abort_after_first_bytes(http, url, i) for i in (start, start + 1)))
    assert statuses == [200] * 200
    await wait_released(api_engine, server)
    # OpenAI's client walking away from a streaming response frees the slot too
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    for _ in range(3):
        with client.audio.speech.with_streaming_response.create(model="tts-1", input=LONG_TEXT, voice="ryan",
                                                                response_format="pcm") as response:
            next(response.iter_bytes())
    await wait_released(api_engine, server)
    status, text = await _get(server.url + "/metrics")
    assert 'speech_api_stream_ends_total{endpoint="speech",reason="client_gone"}' in text
    # going away is an ordinary end: nothing logged as a fault, by the API or by aiohttp
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_aborted_requests_where_aiohttp_does_not_cancel_handlers(api_engine, caplog):
    """Mounted in a server without handler_cancellation (aiohttp's default), the next write notices
    that the client is gone: still nothing logged as a fault and nothing leaked. (An abort may meet a
    429 or 503 there: its key's and its engine slot wait for that write.)"""
    caplog.set_level(logging.WARNING)
    app = make_app(api_engine, SpeechApiConfig(api_keys=(KEY, OTHER_KEY), max_streams_per_key=2))
    runner = web.AppRunner(app)  # (aiohttp's TestServer would turn handler_cancellation on)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        root = f"http://127.0.0.1:{runner.addresses[0][1]}"
        statuses = []
        async with aiohttp.ClientSession() as http:
            for start in range(0, 40, 2):
                statuses += await asyncio.gather(*(_abort_after_first_bytes(http, root + "/v1/audio/speech", i)
                                                   for i in (start, start + 1)))
        assert set(statuses) <= {200, 429, 503} and statuses.count(200) >= 20
        await wait_released(api_engine, runner)
        status, text = await _get(root + "/metrics")
    finally:
        await runner.cleanup()
    assert 'speech_api_requests_total{endpoint="speech",status="499"}' in text  # gone before the status line
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


# ---- capacity ------------------------------------------------------------------------------------

async def test_per_key_limit_is_429_with_retry_after(server, api_engine):
    url = server.url + "/v1/audio/speech"
    async with aiohttp.ClientSession() as http:
        held = [await http.ws_connect(server.url + "/v1/audio/speech/stream", headers=auth()) for _ in range(2)]
        async with http.post(url, json=speech_body(), headers=auth()) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 429 and resp.headers["Retry-After"] == "3"
            assert (error["code"], error["type"]) == ("concurrency_limit_exceeded", "rate_limit_error")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.url + "/v1/audio/speech/stream", headers=auth())
        assert refused.value.status == 429
        async with http.post(url, json=speech_body(), headers=auth(OTHER_KEY)) as resp:
            assert resp.status == 200 and await resp.read()  # other keys are not affected
        await held.pop().close()
        async with http.post(url, json=speech_body(), headers=auth()) as resp:
            assert resp.status == 200 and await resp.read()
        await held.pop().close()
    await wait_released(api_engine, server)


async def test_full_engine_is_503_with_retry_after(server, api_engine):
    """Full for the API is the engine's slots less the reserve kept for live calls (2 of 4 here)."""
    kept = api_engine.config.live_reserve
    assert kept == 2
    occupying = [api_engine.open_stream(speaker="ryan") for _ in range(api_engine.config.max_streams - kept)]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/v1/audio/speech", json=speech_body(), headers=auth()) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                assert (error["code"], error["type"]) == ("engine_busy", "server_error")
            async with http.ws_connect(server.url + "/v1/audio/speech/stream", headers=auth()) as ws:
                await ws.send_json({"type": "start", "voice": "ryan"})
                event = await next_json(ws)
                assert event["error"]["code"] == "engine_busy" and event["retry_after"] == 1
                occupying.append(api_engine.open_stream(speaker="vivian"))  # a live call still gets a slot
                for _ in range(2):
                    occupying.pop().cancel()
                audio, done = await utterance(ws, [TEXT])  # the same socket, once a slot is free
                assert audio and done["reason"] == "frame_cap"
    finally:
        for stream in occupying:
            stream.cancel()
    await wait_released(api_engine, server)
    _, text = await _get(server.url + "/metrics")
    assert 'speech_api_rejects_total{reason="engine_busy"}' in text
    assert 'speech_api_rejects_total{reason="concurrency_limit_exceeded"}' in text


# ---- shutdown ------------------------------------------------------------------------------------

async def test_shutdown_cuts_streams_visibly_and_frees_them(tiny_checkpoint):
    with make_engine(tiny_checkpoint) as engine:
        srv = BackgroundServer(make_app(engine, SpeechApiConfig())).start()
        try:
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(srv.url + "/v1/audio/speech/stream")
                await ws.send_json({"type": "start", "voice": "ryan"})
                await next_json(ws)
                async with http.post(srv.url + "/v1/audio/speech", json=speech_body(input=LONG_TEXT)) as resp:
                    assert await resp.content.readany()
                    await asyncio.to_thread(srv.close)
                    with pytest.raises(aiohttp.ClientPayloadError):  # never a body that looks complete
                        await resp.read()
                closing = await ws.receive()
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)  # "going away"
        finally:
            srv.close()
        assert engine.stats()["active_streams"] == 0


ws_values = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(st.integers(), max_size=2)
ws_messages = st.dictionaries(st.sampled_from(["type", "voice", "language", "response_format", "model", "text"]) |
                              st.text(max_size=6), st.sampled_from(["start", "text", "end", "cancel"]) | ws_values,
                              max_size=4)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(ws_messages | ws_values, min_size=1, max_size=6))
def test_arbitrary_websocket_messages_never_break_the_socket(server, api_engine, messages):
    async def exchange() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.url + "/v1/audio/speech/stream",
                                                                      headers=auth()) as ws:
            for message in messages:
                await ws.send_json(message)
            await ws.send_json({"type": "cancel"})
            await ws.send_json({"type": "ping?"})  # answered with an error event naming it: the socket is alive
            while "ping?" not in (event := await next_json(ws)).get("error", {}).get("message", ""):
                assert event["type"] in ("started", "done", "error"), event
                assert event["type"] != "error" or event["error"]["type"] != "server_error", event

    asyncio.run(exchange())
    asyncio.run(wait_released(api_engine, server))


async def test_a_client_that_takes_no_audio_loses_its_stream(api_engine, monkeypatch):
    async def stalled(self, data: bytes) -> None:  # as a write blocks on a client that never reads
        await asyncio.sleep(3600)

    monkeypatch.setattr("speech_api.speech_stream._AudioBody.audio", stalled)
    with BackgroundServer(make_app(api_engine, SpeechApiConfig(write_timeout_s=0.3))) as srv:
        async with aiohttp.ClientSession() as http, http.post(srv.url + "/v1/audio/speech",
                                                              json=speech_body(input=LONG_TEXT)) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        await wait_released(api_engine, srv, timeout=2.0)
        _, text = await _get(srv.url + "/metrics")
        assert 'speech_api_stream_ends_total{endpoint="speech",reason="write_timeout"} 1.0' in text
