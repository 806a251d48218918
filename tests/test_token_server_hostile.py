"""The token server against a hostile client: arbitrary bodies, headers and paths never get a 5xx
or a traceback, limits answer with the right 4xx, and the server answers /healthz afterwards."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from token_server import TokenServerConfig, http_guard, make_app
from token_server.http_guard import KEEPALIVE_TIMEOUT_S, RateLimiter


def make_cfg(tmp_path, **overrides) -> TokenServerConfig:
    web = tmp_path / "web"
    web.mkdir(exist_ok=True)
    return TokenServerConfig(**{"api_key": "APItestkey", "api_secret": "s" * 40, "web_dir": web, **overrides})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["room", "identity", "name", "x"]) |
                                                                st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)


def run(coro):
    return asyncio.run(coro)


async def no_5xx(cfg, method: str, path: str, **kwargs) -> int:
    """The status of one request; asserts it is not a 5xx and carries no traceback, and that the
    server still answers /healthz after it."""
    async with TestClient(TestServer(make_app(cfg))) as client:
        async with client.request(method, path, **kwargs) as resp:
            text = await resp.text()
            assert resp.status < 500, (resp.status, text)
            assert "Traceback" not in text and 'File "' not in text
        async with client.get("/healthz") as health:
            assert health.status == 200
        return resp.status


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600), content_type=header_text)
def test_arbitrary_bytes_never_5xx(tmp_path, body, content_type):
    status = run(no_5xx(make_cfg(tmp_path), "POST", "/api/token", data=body, headers={"Content-Type": content_type}))
    assert status in (200, 400)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_arbitrary_json_never_5xx(tmp_path, value):
    assert run(no_5xx(make_cfg(tmp_path), "POST", "/api/token", data=json.dumps(value))) in (200, 400)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="#?%"),
                    max_size=300), method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
@example(path="/0", method="GET")
def test_arbitrary_paths_and_methods_never_5xx(tmp_path, path, method):
    # a request path that starts with "//" is, to aiohttp's test client, a URL naming another host
    # (it refuses to send it): the generated path goes after one slash, never two
    run(no_5xx(make_cfg(tmp_path), method, "/" + path.lstrip("/")))


@pytest.mark.parametrize("body", ["[" * 3000, '{"room":' * 3000, '{"room": "r1", "room": ' + "[" * 5000 + "]" * 5000 + "}"])
async def test_deeply_nested_json_is_400(tmp_path, body):
    cfg = make_cfg(tmp_path, max_body_bytes=1 << 20)
    async with TestClient(TestServer(make_app(cfg))) as client:
        async with client.post("/api/token", data=body) as resp:
            assert resp.status == 400
            assert "nested too deeply" in (await resp.json())["error"] or "malformed" in (await resp.json())["error"]


@pytest.mark.parametrize("headers", [{"Content-Encoding": "gzip"}, {"Content-Encoding": "br"},
                                     {"Content-Type": "application/json; charset=bogus"}])
async def test_undecodable_bodies_are_400(tmp_path, headers):
    async with TestClient(TestServer(make_app(make_cfg(tmp_path)))) as client:
        async with client.post("/api/token", data=b"definitely not compressed", headers=headers) as resp:
            assert resp.status == 400, await resp.text()


async def test_overlong_file_name_is_404(tmp_path):
    async with TestClient(TestServer(make_app(make_cfg(tmp_path)))) as client:
        async with client.get("/" + "a" * 300) as resp:
            assert resp.status == 404


@pytest.mark.parametrize("field", ["room", "identity"])
async def test_trailing_newline_in_names_is_400(tmp_path, field):
    async with TestClient(TestServer(make_app(make_cfg(tmp_path)))) as client:
        async with client.post("/api/token", json={field: "abc\n"}) as resp:
            assert resp.status == 400


async def test_token_rate_limit_is_429_with_retry_after(tmp_path):
    cfg = make_cfg(tmp_path, rate_limit_per_min=6.0, rate_limit_burst=3)
    async with TestClient(TestServer(make_app(cfg))) as client:
        statuses = []
        for _ in range(5):
            async with client.post("/api/token", json={}) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert "too many" in (await resp.json())["error"]
        assert statuses == [200, 200, 200, 429, 429]
        async with client.get("/healthz") as health:  # health checks are not rate limited
            assert health.status == 200


def test_rate_limiter_refills_and_forgets_old_clients():
    now = [0.0]
    limiter = RateLimiter(per_minute=60.0, burst=2, max_clients=2, clock=lambda: now[0])
    assert limiter.retry_after("a") is None and limiter.retry_after("a") is None
    wait = limiter.retry_after("a")
    assert wait == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.retry_after("a") is None
    limiter.retry_after("b")
    limiter.retry_after("c")  # the third client pushes out the least recently seen ("a")
    assert limiter.retry_after("a") is None and limiter.retry_after("a") is None


@pytest.mark.parametrize("livekit_url,expected", [
    (None, "connect-src 'self' http://127.0.0.1:8081 ws://127.0.0.1:8081"),
    ("wss://lk.example.test", "connect-src 'self' https://lk.example.test wss://lk.example.test"),
])
async def test_page_has_a_content_security_policy(tmp_path, livekit_url, expected):
    cfg = make_cfg(tmp_path, livekit_url=livekit_url)
    (cfg.web_dir / "index.html").write_text("<html></html>")
    async with TestClient(TestServer(make_app(cfg))) as client:
        async with client.get("/") as resp:
            csp = resp.headers["Content-Security-Policy"]
    assert expected in csp
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp


async def test_slow_headers_and_slow_bodies_are_cut_off(tmp_path, monkeypatch):
    """A client trickling its headers is disconnected after the keep-alive deadline; one trickling
    its body gets 408."""
    assert KEEPALIVE_TIMEOUT_S <= 30
    runner = web.AppRunner(make_app(make_cfg(tmp_path)), keepalive_timeout=0.5)  # as __main__ passes it
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"POST /api/token HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed, nothing answered
        writer.close()
    finally:
        await runner.cleanup()

    monkeypatch.setattr(http_guard, "BODY_TIMEOUT_S", 0.3)

    async def trickle():
        yield b"{"
        await asyncio.sleep(2.0)
        yield b"}"

    async with TestClient(TestServer(make_app(make_cfg(tmp_path)))) as client:
        async with client.post("/api/token", data=trickle()) as resp:
            assert resp.status == 408
            assert "did not arrive" in (await resp.json())["error"]


async def test_an_unexpected_exception_is_a_500_naming_only_a_request_id(tmp_path, caplog):
    app = make_app(make_cfg(tmp_path))

    async def broken(_request):
        raise RuntimeError("secret internal detail")

    app.router.add_post("/api/broken", broken)
    async with TestClient(TestServer(app)) as client:
        async with client.post("/api/broken") as resp:
            body = await resp.json()
        assert resp.status == 500 and "request id" in body["error"]
        assert "secret internal detail" not in body["error"] and "Traceback" not in body["error"]
        request_id = body["error"].rsplit(" ", 1)[-1].rstrip(")")
        assert any(request_id in r.getMessage() for r in caplog.records)  # the log has the rest
        async with client.get("/healthz") as health:
            assert health.status == 200
