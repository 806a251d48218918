"""The speech API (speech_api/) through OpenAI's own Python client: every format decodes to the
engine's duration, pcm and wav are the engine's own samples, SSE parses as OpenAI's client parses
it, and every bad field, body or key gets its documented 4xx in OpenAI's error shape - never a 5xx.

Reference audio is the engine's STREAMING path (open_stream + push_text + end_text), not
`synthesize`: the API streams, and the engine's two modes differ by design - a stream feeds the
text to the talker one token per frame (dual track, as qwen-tts' non_streaming_mode=False), while
`synthesize` puts the whole text in the prompt (non_streaming_mode=True), so the same text gives
other (equally valid) codes; and stream packets carry a 5 ms fade-in that `synthesize`'s float
waveform does not.
"""

from __future__ import annotations

import base64
import io
import json
import math
import urllib.error
import urllib.request

import av
import numpy as np
import openai
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from speech_api import SERVICE_KEY, BackgroundServer, ConfigError, SpeechApiConfig, make_app
from speech_api.audio import FORMATS
from tts_engine import EngineConfig, FrameCapConfig, SchedulerConfig, TTSEngine

torch.set_num_threads(1)

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "test-key-fedcba9876543210"
TEXT = "Hello world, how are you today?"
FRAME = 1920  # samples of one 80 ms codec frame at 24 kHz


def make_engine(checkpoint: str, **overrides) -> TTSEngine:
    """Greedy, never ahead-limited, short replies: the tiny model never says EOS, so the frame cap
    (4 + 2 per text token) sets each utterance's length."""
    cfg = {"model": checkpoint, "do_sample": False, "max_streams": 4, "scheduler": SchedulerConfig(max_lead_s=None),
           "frame_cap": FrameCapConfig(base_frames=4, frames_per_text_token=2), **overrides}
    return TTSEngine(EngineConfig(**cfg))


def engine_stream_pcm(engine: TTSEngine, text: str, voice: str = "ryan", language: str = "auto") -> np.ndarray:
    stream = engine.open_stream(speaker=voice, language=language)
    stream.push_text(text)
    stream.end_text()
    return np.concatenate([p.pcm for p in stream])


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """PyAV: first channel as float, and the decoder's rate."""
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    rate = frames[0].sample_rate
    chunks = [f.to_ndarray()[0] if f.format.is_planar else f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(chunks).astype(np.float64), rate


def request(url: str, body: bytes | dict | None = None, *, key: str | None = KEY, method: str = "POST",
            content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": content_type} if data is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def speech_body(**fields) -> dict:
    return {"model": "tts-1", "input": TEXT, "voice": "ryan", "response_format": "pcm", **fields}


@pytest.fixture(scope="module")
def api_engine(tiny_checkpoint):
    with make_engine(tiny_checkpoint) as engine:
        yield engine


@pytest.fixture(scope="module")
def server(api_engine):
    with BackgroundServer(make_app(api_engine, SpeechApiConfig(api_keys=(KEY, OTHER_KEY)))) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def reference(api_engine):
    return engine_stream_pcm(api_engine, TEXT)


# ---- audio through OpenAI's client --------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_the_engines_duration(client, reference, fmt):
    whole = client.audio.speech.create(model="tts-1", input=TEXT, voice="ryan", response_format=fmt).content
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=TEXT, voice="ryan",
                                                            response_format=fmt) as response:
        assert response.status_code == 200
        content_type = response.headers["content-type"]
        streamed = b"".join(response.iter_bytes())
    assert content_type.startswith({"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                                    "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}[fmt])
    if fmt == "pcm":
        samples, rate = np.frombuffer(whole, "<i2"), 24000
        assert streamed == whole
    else:
        samples, rate = decode(whole)
        assert np.array_equal(decode(streamed)[0], samples)  # greedy engine: the same audio either way
    # within one codec frame: mp3 and aac decode with their encoder delay and padding added
    assert abs(len(samples) / rate - len(reference) / 24000) <= FRAME / 24000, (fmt, len(samples), rate)
    assert np.abs(samples).max() > 0


def test_pcm_and_wav_are_the_engines_own_samples(client, reference):
    pcm = client.audio.speech.create(model="tts-1", input=TEXT, voice="ryan", response_format="pcm").content
    assert np.array_equal(np.frombuffer(pcm, "<i2"), reference)
    wav = client.audio.speech.create(model="tts-1", input=TEXT, voice="ryan", response_format="wav").content
    # streaming WAV: a 44-byte header whose RIFF and data sizes say "unknown" (0xFFFFFFFF)
    assert wav[:4] == b"RIFF" and wav[4:8] == b"\xff\xff\xff\xff" and wav[36:44] == b"data\xff\xff\xff\xff"
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
    assert rate == 24000 and np.array_equal(samples, reference)
    assert wav[44:] == pcm


def test_first_bytes_leave_while_the_engine_still_speaks(client, api_engine):
    text = " ".join(["Streaming speech arrives frame by frame while the rest is still being made."] * 2)
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=text, voice="vivian",
                                                            response_format="pcm") as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        still_running = api_engine.stats()["active_streams"]
        rest = b"".join(chunks)
    assert first and still_running == 1
    assert len(rest) > 20 * len(first), "audio must arrive in pieces, not at the end"


def test_sse_events_are_openais(client, reference):
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=TEXT, voice="ryan",
                                                            response_format="pcm", stream_format="sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [sse.json() for sse in SSEDecoder().iter_bytes(response.iter_bytes())]
    *deltas, done = events
    assert deltas and all(set(e) == {"type", "audio"} and e["type"] == "speech.audio.delta" for e in deltas)
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == reference.tobytes()
    assert done["type"] == "speech.audio.done" and set(done) == {"type", "usage"}
    usage = done["usage"]
    assert usage["output_tokens"] == len(reference) // FRAME and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_sse_word_timestamps_follow_the_audio_that_carries_them(client, reference):
    """Ours, asked for with "timestamps": "word" (OpenAI's client passes it as extra_body): a word
    event per word, after the delta that carried its end, contiguous and covering the audio."""
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", input=TEXT, voice="ryan", response_format="pcm", stream_format="sse",
            extra_body={"timestamps": "word"}) as response:
        events = [sse.json() for sse in SSEDecoder().iter_bytes(response.iter_bytes())]
    received, words = 0.0, []
    for e in events:
        if e["type"] == "speech.audio.delta":
            received += len(base64.b64decode(e["audio"])) / 2 / 24000
        elif e["type"] == "speech.audio.word":
            assert e["end_s"] <= received + 1e-6, "a word came before its audio"
            words.append(e)
    assert [w["word"] for w in words] == TEXT.split() and events[-1]["type"] == "speech.audio.done"
    assert words[0]["start_s"] == 0 and words[-1]["end_s"] == pytest.approx(len(reference) / 24000)
    assert all(a["end_s"] == b["start_s"] < b["end_s"] for a, b in zip(words, words[1:], strict=False))
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert audio == reference.tobytes()  # the same audio with or without timestamps


def test_sse_through_openais_stream_class(client):
    """OpenAI's client's own SSE path (Stream): each event arrives as a parsed object."""
    body = speech_body(response_format="mp3", stream_format="sse")
    stream = client.post("/audio/speech", body=body, cast_to=object, stream=True, stream_cls=openai.Stream[object])
    events = list(stream)
    assert events[-1]["type"] == "speech.audio.done"
    mp3 = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    samples, rate = decode(mp3)
    assert rate == 24000 and len(samples) > 10 * FRAME


@pytest.mark.parametrize("speed", [0.5, 2.0, 4.0])
def test_speed_time_stretches_within_a_frame(client, reference, speed):
    pcm = client.audio.speech.create(model="tts-1", input=TEXT, voice="ryan", response_format="pcm", speed=speed).content
    expected = len(reference) / speed
    assert abs(len(pcm) // 2 - expected) <= FRAME, (len(pcm) // 2, expected)


def test_voice_names_are_case_insensitive_and_may_be_objects(server, reference):
    status, _, body = request(server.url + "/v1/audio/speech", speech_body(voice={"id": "RYAN"}, language=None,
                                                                           speed=None, instructions=""))
    assert status == 200 and np.array_equal(np.frombuffer(body, "<i2"), reference)


# ---- refusals ------------------------------------------------------------------------------------

def _bad(**fields):
    return json.dumps(speech_body(**fields)).encode()


def _without(name):
    body = speech_body()
    del body[name]
    return json.dumps(body).encode()


BAD_REQUESTS = [  # (body, content type, status, param, code)
    (b"{", "application/json", 400, None, "invalid_json"),
    (b"\xff\xfe{}", "application/json", 400, None, "invalid_json"),
    (b"", "application/json", 400, None, "invalid_json"),
    (b"[1, 2]", "application/json", 400, None, "invalid_body"),
    (b'{"speed": ' + b"1" * 5000 + b"}", "application/json", 400, None, "invalid_json"),  # past int's digit limit
    (_bad(), "text/plain", 415, None, "unsupported_media_type"),
    (_bad(), "application/x-www-form-urlencoded", 415, None, "unsupported_media_type"),
    (_without("model"), "application/json", 400, "model", "missing_model"),
    (_bad(model="whisper-1"), "application/json", 404, "model", "model_not_found"),
    (_bad(model=7), "application/json", 400, "model", "invalid_type"),
    (_without("input"), "application/json", 400, "input", "missing_input"),
    (_bad(input=""), "application/json", 400, "input", "empty_input"),
    (_bad(input=" \n\t "), "application/json", 400, "input", "empty_input"),
    (_bad(input="\x00\x01\x02"), "application/json", 400, "input", "empty_input"),  # nothing speakable
    (b'{"model": "tts-1", "input": "\\ud800 \\udfff", "voice": "ryan"}', "application/json", 400, "input",
     "empty_input"),  # lone surrogates only: the engine drops them
    (_bad(input=["a"]), "application/json", 400, "input", "invalid_type"),
    (_bad(input="a" * 4001), "application/json", 400, "input", "input_too_long"),
    (_without("voice"), "application/json", 400, "voice", "missing_voice"),
    (_bad(voice="alloy"), "application/json", 400, "voice", "unknown_voice"),
    (_bad(voice={"name": "ryan"}), "application/json", 400, "voice", "invalid_type"),
    (_bad(language="klingon"), "application/json", 400, "language", "unknown_language"),
    (_bad(response_format="ogg"), "application/json", 400, "response_format", "invalid_value"),
    (_bad(response_format=1), "application/json", 400, "response_format", "invalid_type"),
    (_bad(speed=4.5), "application/json", 400, "speed", "invalid_value"),
    (_bad(speed=0.1), "application/json", 400, "speed", "invalid_value"),
    (_bad(speed="fast"), "application/json", 400, "speed", "invalid_type"),
    (_bad(speed=True), "application/json", 400, "speed", "invalid_type"),
    (b'{"model": "tts-1", "input": "hi", "voice": "ryan", "speed": NaN}', "application/json", 400, "speed",
     "invalid_type"),
    (_bad(stream_format="chunks"), "application/json", 400, "stream_format", "invalid_value"),
    (_bad(timestamps="sentence", stream_format="sse"), "application/json", 400, "timestamps", "invalid_value"),
    (_bad(timestamps="word"), "application/json", 400, "timestamps", "unsupported_parameter"),  # needs sse
    (_bad(instructions="Speak cheerfully."), "application/json", 400, "instructions", "unsupported_parameter"),
    (_bad(temperature=0.5), "application/json", 400, "temperature", "unknown_parameter"),
    (b'{"input": "' + b"x" * (70 * 1024) + b'"}', "application/json", 413, None, "body_too_large"),
]


@pytest.mark.parametrize("body, content_type, status, param, code", BAD_REQUESTS,
                         ids=[f"{i}-{c[4]}" for i, c in enumerate(BAD_REQUESTS)])
def test_each_bad_request_gets_its_4xx(server, body, content_type, status, param, code):
    got, _, raw = request(server.url + "/v1/audio/speech", body, content_type=content_type)
    error = json.loads(raw)["error"]
    assert (got, error["param"], error["code"]) == (status, param, code), error
    assert error["type"] == "invalid_request_error" and error["message"]
    if code == "unknown_voice":
        assert "ryan, vivian" in error["message"]  # the valid voices are named


def test_routing_errors_are_json(server):
    status, _, raw = request(server.url + "/v1/nothing", method="GET")
    assert status == 404 and json.loads(raw)["error"]["code"] == "not_found"
    status, headers, raw = request(server.url + "/v1/audio/speech", method="GET")
    assert status == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed" and "POST" in headers["Allow"]


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", input=TEXT, voice="nova")
    assert bad.value.body["param"] == "voice"
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="dall-e-3", input=TEXT, voice="ryan")
    wrong = openai.OpenAI(base_url=str(client.base_url), api_key="not-a-key-of-this-server", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.audio.speech.create(model="tts-1", input=TEXT, voice="ryan")
    assert denied.value.body["code"] == "invalid_api_key"


@pytest.mark.parametrize("header, code", [(None, "missing_api_key"), ("Basic abc", "missing_api_key"),
                                          ("Bearer ", "missing_api_key"), ("Bearer wrong-key-000000000", "invalid_api_key")])
def test_keys_are_required(server, header, code):
    headers = {"Content-Type": "application/json"} | ({"Authorization": header} if header else {})
    req = urllib.request.Request(server.url + "/v1/audio/speech", data=_bad(), headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, timeout=30)
    assert denied.value.code == 401 and denied.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(denied.value.read())["error"]["code"] == code
    for path in ("/v1/models", "/v1/audio/voices"):
        assert request(server.url + path, method="GET", key=None)[0] == 401


def test_an_unexpected_error_is_a_500_naming_only_a_request_id(server, monkeypatch):
    def broken(*_args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("speech_api.app.parse_speech_request", broken)
    status, _, raw = request(server.url + "/v1/audio/speech", speech_body())
    error = json.loads(raw)["error"]
    assert status == 500 and "request id" in error["message"] and "secret" not in raw.decode()
    assert error["type"] == "server_error"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
field_names = st.sampled_from(["model", "input", "voice", "response_format", "speed", "instructions",
                               "stream_format", "language"]) | st.text(max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(field_names, json_values, max_size=6), base=st.booleans())
def test_arbitrary_fields_never_get_a_5xx(server, fields, base):
    body = {**(speech_body(input="Hi there.") if base else {}), **fields}
    status, _, raw = request(server.url + "/v1/audio/speech", json.dumps(body, allow_nan=True).encode())
    assert status < 500, raw[:300]
    if status >= 400:
        assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}


# ---- listings, health, metrics, configuration ----------------------------------------------------

def test_voices_models_health_and_metrics(server, api_engine):
    status, _, raw = request(server.url + "/v1/audio/voices", method="GET")
    voices = json.loads(raw)
    assert status == 200 and [v["id"] for v in voices["data"]] == ["ryan", "vivian"]
    assert voices["languages"] == ["auto", "chinese", "english"]
    status, _, raw = request(server.url + "/v1/models", method="GET")
    assert status == 200 and [m["id"] for m in json.loads(raw)["data"]] == ["qwen3-tts", "tts-1", "tts-1-hd",
                                                                            "gpt-4o-mini-tts"]
    status, _, raw = request(server.url + "/healthz", method="GET", key=None)
    health = json.loads(raw)
    assert status == 200 and health["status"] == "ok" and health["engine"]["max_streams"] == 4
    request(server.url + "/v1/audio/speech", speech_body())
    status, headers, raw = request(server.url + "/metrics", method="GET", key=None)
    text = raw.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'speech_api_requests_total{endpoint="speech",status="200"}' in text
    assert 'speech_api_ttfa_seconds_count{endpoint="speech"}' in text
    assert "speech_api_active_streams 0.0" in text and "speech_api_engine_load" in text
    assert server.app[SERVICE_KEY].streams == set()


def test_a_stopped_engine_answers_503(tiny_checkpoint):
    engine = make_engine(tiny_checkpoint)
    with BackgroundServer(make_app(engine, SpeechApiConfig())) as srv:
        engine.close()
        status, _, raw = request(srv.url + "/healthz", method="GET", key=None)
        assert status == 503 and json.loads(raw)["status"] == "unavailable"
        status, headers, raw = request(srv.url + "/v1/audio/speech", speech_body(), key=None)
        assert status == 503 and json.loads(raw)["error"]["code"] == "engine_unavailable" and headers["Retry-After"]


def test_auth_is_off_only_on_loopback_without_keys(api_engine):
    with pytest.raises(ConfigError, match="SPEECH_API_KEYS"):
        SpeechApiConfig(host="0.0.0.0")
    with pytest.raises(ConfigError, match="16"):
        SpeechApiConfig(host="0.0.0.0", api_keys=("short",))
    assert not SpeechApiConfig(host="::1").auth_required
    with BackgroundServer(make_app(api_engine, SpeechApiConfig())) as srv:
        assert request(srv.url + "/v1/models", method="GET", key=None)[0] == 200


def test_config_from_env_reads_only_what_is_set(tmp_path):
    defaults = SpeechApiConfig()
    assert SpeechApiConfig.from_env({}) == defaults
    keys = tmp_path / "keys"
    keys.write_text(f"# one per line\n{OTHER_KEY}\n")
    cfg = SpeechApiConfig.from_env({"SPEECH_API_HOST": "0.0.0.0", "SPEECH_API_KEYS": KEY, "SPEECH_API_KEYS_FILE":
                                    str(keys), "SPEECH_API_MAX_STREAMS_PER_KEY": "2", "SPEECH_API_PORT": " ",
                                    "SPEECH_API_IGNORE_INSTRUCTIONS": "1"})
    assert cfg.api_keys == (KEY, OTHER_KEY) and cfg.max_streams_per_key == 2 and cfg.ignore_instructions
    assert cfg.port == defaults.port and cfg.write_timeout_s == defaults.write_timeout_s
    with pytest.raises(ConfigError, match="SPEECH_API_PORT"):
        SpeechApiConfig.from_env({"SPEECH_API_PORT": "eighty"})
    with pytest.raises(ConfigError, match="SPEECH_API_KEYS_FILE"):
        SpeechApiConfig.from_env({"SPEECH_API_KEYS_FILE": str(tmp_path / "missing")})
    assert math.isclose(SpeechApiConfig.from_env({"SPEECH_API_WRITE_TIMEOUT_S": "2.5"}).write_timeout_s, 2.5)
