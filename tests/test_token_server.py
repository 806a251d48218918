"""token_server: tokens (checked with livekit-api's own verifier), the HTTP API and its errors, the
static page, configuration, and the CLI's exit code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit.api import AccessToken, TokenVerifier, VideoGrants

from token_server import (
    ConfigError,
    TokenRejected,
    TokenServerConfig,
    make_app,
    mint_token,
    verify_token,
)

REPO = Path(__file__).resolve().parent.parent
KEY = "APItestkey"
SECRET = "s3cr3t-" + "Zq9" * 12  # distinctive, so a leak is easy to spot
LIVEKIT_URL = "wss://livekit.example.test"
OFFER_URL = "http://127.0.0.1:8081/api/offer"


def make_cfg(tmp_path: Path, **overrides) -> TokenServerConfig:
    web = tmp_path / "web"
    web.mkdir(exist_ok=True)
    return TokenServerConfig(**{"api_key": KEY, "api_secret": SECRET, "web_dir": web, **overrides})


@contextlib.asynccontextmanager
async def serve(cfg: TokenServerConfig) -> AsyncIterator[TestClient]:
    # Built inside each test, so the server lives on the test's own event loop.
    async with TestClient(TestServer(make_app(cfg))) as client:
        yield client


# --- tokens ---------------------------------------------------------------------------------------


def test_token_verifies_with_livekit_verifier(tmp_path):
    cfg = make_cfg(tmp_path, agent_name="voice-agent")
    token = mint_token(cfg, room="room-1", identity="alice.smith@example", name="Alice Smith")
    claims = TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "alice.smith@example"
    assert claims.name == "Alice Smith"
    assert claims.video.room == "room-1"
    assert claims.video.room_join is True
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data
    assert [a.agent_name for a in claims.room_config.agents] == ["voice-agent"]
    assert verify_token(cfg, token)["sub"] == "alice.smith@example"


def test_token_without_agent_name_has_no_dispatch_or_name(tmp_path):
    cfg = make_cfg(tmp_path)
    raw = jwt.decode(mint_token(cfg, room="r", identity="u"), SECRET, algorithms=["HS256"], issuer=KEY)
    assert "roomConfig" not in raw and "name" not in raw
    assert raw["exp"] - raw["nbf"] == cfg.token_ttl_s


def test_claim_layout_matches_livekit_access_token(tmp_path):
    cfg = make_cfg(tmp_path, token_ttl_s=600)
    ours = jwt.decode(mint_token(cfg, room="r1", identity="u1", name="N"), SECRET, algorithms=["HS256"],
                      issuer=KEY)
    theirs_token = (AccessToken(KEY, SECRET).with_identity("u1").with_name("N")
                    .with_grants(VideoGrants(room_join=True, room="r1", can_publish=True, can_subscribe=True,
                                             can_publish_data=True)).to_jwt())
    theirs = jwt.decode(theirs_token, SECRET, algorithms=["HS256"], issuer=KEY)
    for claim in ("iss", "sub", "name"):
        assert ours[claim] == theirs[claim]
    for grant, value in ours["video"].items():
        assert theirs["video"][grant] == value


def test_expired_token_rejected_by_verifier_and_verify_token(tmp_path):
    cfg = make_cfg(tmp_path, token_ttl_s=60)
    token = mint_token(cfg, room="r", identity="u", now=time.time() - 60 - 300)  # well past both leeways
    with pytest.raises(jwt.ExpiredSignatureError):
        TokenVerifier(KEY, SECRET).verify(token)
    with pytest.raises(TokenRejected, match="expired") as info:
        verify_token(cfg, token)
    assert info.value.reason == "expired"


def test_wrong_secret_or_key_rejected(tmp_path):
    cfg = make_cfg(tmp_path)
    token = mint_token(cfg, room="r", identity="u")
    with pytest.raises(jwt.InvalidSignatureError):
        TokenVerifier(KEY, "another-secret-" + "x" * 32).verify(token)
    with pytest.raises(TokenRejected) as info:
        verify_token(make_cfg(tmp_path, api_secret="another-secret-" + "x" * 32), token)
    assert info.value.reason == "bad_signature"
    with pytest.raises(TokenRejected) as info:
        verify_token(make_cfg(tmp_path, api_key="otherkey"), token)
    assert info.value.reason == "wrong_issuer"


def _signed(claims: dict) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


# Built when the module is collected, checked when the test runs (minutes later in a full run):
# the validity window is far wider than any test run.
_NOW = int(time.time())
_YEAR = 365 * 86400
_GOOD = {"iss": KEY, "sub": "u", "nbf": _NOW, "exp": _NOW + _YEAR,
         "video": {"roomJoin": True, "room": "r", "canPublish": True, "canSubscribe": True}}


@pytest.mark.parametrize("token, reason", [
    ("", "malformed"),
    ("not-a-jwt", "malformed"),
    (jwt.encode(_GOOD, None, algorithm="none"), "malformed"),
    (_signed({k: v for k, v in _GOOD.items() if k != "exp"}), "malformed"),
    (_signed({**_GOOD, "nbf": _NOW + _YEAR // 2}), "not_yet_valid"),
    (_signed({k: v for k, v in _GOOD.items() if k != "video"}), "missing_grants"),
    (_signed({**_GOOD, "video": {**_GOOD["video"], "roomJoin": False}}), "missing_grants"),
    (_signed({**_GOOD, "video": {**_GOOD["video"], "room": ""}}), "missing_grants"),
    (_signed({**_GOOD, "video": {**_GOOD["video"], "canPublish": False}}), "missing_grants"),
    (_signed({**_GOOD, "sub": ""}), "missing_grants"),
], ids=["empty", "garbage", "alg-none", "no-exp", "future-nbf", "no-video", "no-roomjoin", "no-room",
        "no-publish", "no-identity"])
def test_verify_token_rejections(tmp_path, token, reason):
    with pytest.raises(TokenRejected) as info:
        verify_token(make_cfg(tmp_path), token)
    assert info.value.reason == reason
    assert SECRET not in str(info.value)


def test_verify_token_accepts_hand_built_good_token(tmp_path):
    assert verify_token(make_cfg(tmp_path), _signed(_GOOD))["video"]["room"] == "r"


@pytest.mark.parametrize("kwargs, message", [
    ({"room": "has space", "identity": "u"}, "room must be 1-64"),
    ({"room": "r" * 65, "identity": "u"}, "room must be 1-64"),
    ({"room": "r", "identity": "a/b"}, "identity must be 1-64"),
    ({"room": "r", "identity": "u", "name": "x" * 129}, "name must be 1-128"),
    ({"room": "r", "identity": "u", "name": "bell\x07"}, "printable"),
])
def test_mint_token_rejects_bad_inputs(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mint_token(make_cfg(tmp_path), **kwargs)


# --- HTTP API -------------------------------------------------------------------------------------


async def test_http_token_defaults_fresh_room_and_identity(tmp_path):
    cfg = make_cfg(tmp_path)
    async with serve(cfg) as client:
        first = await (await client.post("/api/token")).json()
        second = await (await client.post("/api/token", json={})).json()
    assert first["room"].startswith("voice-") and first["identity"].startswith("user-")
    assert first["room"] != second["room"] and first["identity"] != second["identity"]
    claims = TokenVerifier(KEY, SECRET).verify(first["token"])
    assert claims.identity == first["identity"] and claims.video.room == first["room"]
    assert jwt.decode(first["token"], SECRET, algorithms=["HS256"], issuer=KEY)["exp"] == first["expires_at"]
    assert abs(first["expires_at"] - (time.time() + cfg.token_ttl_s)) < 5


async def test_http_token_explicit_fields(tmp_path):
    async with serve(make_cfg(tmp_path, agent_name="bot")) as client:
        resp = await client.post("/api/token", json={"room": "my_room-2", "identity": "bob@host.x",
                                                     "name": "Bob Ünicode"})
        body = await resp.json()
    assert resp.status == 200
    assert (body["room"], body["identity"]) == ("my_room-2", "bob@host.x")
    claims = TokenVerifier(KEY, SECRET).verify(body["token"])
    assert claims.name == "Bob Ünicode"
    assert claims.room_config.agents[0].agent_name == "bot"


async def test_http_null_fields_count_as_absent(tmp_path):
    async with serve(make_cfg(tmp_path)) as client:
        body = await (await client.post("/api/token", json={"room": None, "identity": None, "name": None})).json()
    assert body["room"].startswith("voice-") and body["identity"].startswith("user-")


@pytest.mark.parametrize("body, message", [
    (b"{", "malformed JSON"),
    (b"{\"room\": \"a\",}", "malformed JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[]", "must be a JSON object"),
    (b"\"room\"", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"{\"room\": 5}", "room must be a string"),
    (b"{\"identity\": [\"u\"]}", "identity must be a string"),
    (b"{\"name\": true}", "name must be a string"),
    (b"{\"room\": \"\"}", "room must be 1-64"),
    (b"{\"room\": \"a b\"}", "room must be 1-64"),
    (b"{\"room\": \"../etc\"}", "room must be 1-64"),
    (json.dumps({"room": "r" * 65}).encode(), "room must be 1-64"),
    (b"{\"identity\": \"\"}", "identity must be 1-64"),
    (b"{\"identity\": \"u<script>\"}", "identity must be 1-64"),
    (json.dumps({"identity": "u" * 65}).encode(), "identity must be 1-64"),
    (b"{\"name\": \"\"}", "name must be 1-128"),
    (json.dumps({"name": "n" * 129}).encode(), "name must be 1-128"),
    (b"{\"name\": \"line\\nbreak\"}", "printable"),
    (b"{\"roomName\": \"r\"}", "unknown field(s) 'roomName'"),
], ids=lambda v: v.decode("latin-1")[:24] if isinstance(v, bytes) else None)
async def test_http_bad_input_is_400_with_message(tmp_path, body, message):
    async with serve(make_cfg(tmp_path)) as client:
        resp = await client.post("/api/token", data=body, headers={"Content-Type": "application/json"})
        payload = await resp.json()
    assert resp.status == 400
    assert message in payload["error"] and set(payload) == {"error"}


async def test_http_oversized_body_is_413(tmp_path):
    cfg = make_cfg(tmp_path, max_body_bytes=256)

    async def chunked():  # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b" " * 100

    async with serve(cfg) as client:
        declared = await client.post("/api/token", data=b"{\"name\": \"" + b"x" * 300 + b"\"}")
        streamed = await client.post("/api/token", data=chunked())
        for resp in (declared, streamed):
            assert resp.status == 413
            assert (await resp.json())["error"] == "request body too large: the limit is 256 bytes"
        # Exactly at the limit is fine (whitespace-padded JSON).
        ok = await client.post("/api/token", data=b"{}" + b" " * 254)
        assert ok.status == 200


async def test_wrong_method_and_unknown_api_path(tmp_path):
    async with serve(make_cfg(tmp_path)) as client:
        get = await client.get("/api/token")
        assert get.status == 405 and get.headers["Allow"] == "POST" and "error" in await get.json()
        missing = await client.post("/api/nope")
        assert missing.status == 404 and "error" in await missing.json()


@pytest.mark.parametrize("livekit_url, mode, url", [(None, "direct", OFFER_URL), (LIVEKIT_URL, "livekit", LIVEKIT_URL)])
async def test_mode_and_url(tmp_path, livekit_url, mode, url):
    async with serve(make_cfg(tmp_path, livekit_url=livekit_url, agent_offer_url=OFFER_URL)) as client:
        body = await (await client.post("/api/token")).json()
        health = await client.get("/healthz")
        assert health.status == 200 and await health.json() == {"status": "ok", "mode": mode}
    assert (body["mode"], body["url"]) == (mode, url)
    assert set(body) == {"token", "url", "mode", "room", "identity", "expires_at"}


async def test_security_headers(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "index.html").write_text("<html></html>")
    async with serve(make_cfg(tmp_path)) as client:
        token = await client.post("/api/token")
        page = await client.get("/")
    assert token.headers["Cache-Control"] == "no-store"
    for resp in (token, page):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cross_origin_policy(tmp_path):
    allowed = "http://127.0.0.1:9999"
    async with serve(make_cfg(tmp_path, allowed_origins=[allowed])) as client:
        same = await client.post("/api/token", headers={"Origin": str(client.make_url("")).rstrip("/")})
        assert same.status == 200 and "Access-Control-Allow-Origin" not in same.headers
        foreign = await client.post("/api/token", headers={"Origin": "http://evil.example"})
        assert foreign.status == 403 and "not allowed" in (await foreign.json())["error"]
        listed = await client.post("/api/token", headers={"Origin": allowed})
        assert listed.status == 200 and listed.headers["Access-Control-Allow-Origin"] == allowed
        preflight = await client.options("/api/token", headers={
            "Origin": allowed, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Methods"] == "POST"


async def test_static_serving(tmp_path):
    web = tmp_path / "web"
    (web / "vendor").mkdir(parents=True)
    (web / "index.html").write_text("<html>voice page</html>")
    (web / "app.js").write_text("console.log(1)")
    (web / "vendor" / "lib.js").write_text("lib")
    (web / ".env").write_text("LIVEKIT_API_SECRET=x")
    (tmp_path / "outside.txt").write_text("private")
    (web / "link.txt").symlink_to(tmp_path / "outside.txt")
    async with serve(make_cfg(tmp_path)) as client:
        index = await client.get("/")
        assert index.status == 200 and "voice page" in await index.text()
        assert index.headers["Content-Type"].startswith("text/html")
        js = await client.get("/app.js")
        assert js.status == 200 and "javascript" in js.headers["Content-Type"]
        assert (await client.get("/vendor/lib.js")).status == 200
        for path in ("/vendor/", "/vendor", "/.env", "/link.txt", "/missing.css", "/%2e%2e/outside.txt"):
            resp = await client.get(path)
            assert resp.status == 404, path
            assert "error" in await resp.json()


async def test_static_path_traversal_raw_requests(tmp_path):
    # Raw request lines: the client library would normalise these paths before sending them.
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "index.html").write_text("page")
    (tmp_path / "private.txt").write_text("PRIVATE")
    async with serve(make_cfg(tmp_path)) as client:
        for path in ("/../private.txt", "/%2e%2e/private.txt", "/..%2fprivate.txt", "/x/../../private.txt",
                     f"/{tmp_path}/private.txt", "/%00"):
            reader, writer = await asyncio.open_connection(client.host, client.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            reply = await reader.read()
            writer.close()
            assert reply.startswith(b"HTTP/1.1 404") and b"PRIVATE" not in reply, path


def test_package_imports_no_engine_agent_or_torch():
    code = ("import sys, token_server, token_server.app; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'agent', 'tts_engine'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


async def test_missing_page_is_clear_404(tmp_path):
    async with serve(make_cfg(tmp_path)) as client:
        resp = await client.get("/")
        assert resp.status == 404
        assert "index.html" in (await resp.json())["error"]
        assert (await client.get("/healthz")).status == 200  # the server still runs


async def test_secret_never_in_responses(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "index.html").write_text("<html></html>")
    cfg = make_cfg(tmp_path, livekit_url=LIVEKIT_URL, agent_name="bot", max_body_bytes=64)
    async with serve(cfg) as client:
        responses = [
            await client.post("/api/token"),
            await client.post("/api/token", json={"room": "r", "identity": "u", "name": "n"}),
            await client.post("/api/token", data=b"{"),
            await client.post("/api/token", data=b"{\"room\": 1}"),
            await client.post("/api/token", data=b"x" * 100),
            await client.post("/api/token", headers={"Origin": "http://evil.example"}),
            await client.get("/api/token"),
            await client.get("/healthz"),
            await client.get("/"),
            await client.get("/nothing"),
        ]
        for resp in responses:
            assert SECRET not in await resp.text()
            assert all(SECRET not in f"{k}: {v}" for k, v in resp.headers.items())


# --- configuration and CLI ------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"api_key": ""}, "api_key"),
    ({"api_secret": ""}, "api_secret"),
    ({"token_ttl_s": 59}, "token_ttl_s"),
    ({"token_ttl_s": 86401}, "token_ttl_s"),
    ({"livekit_url": "ftp://x"}, "livekit_url"),
    ({"agent_offer_url": "127.0.0.1:8081"}, "agent_offer_url"),
    ({"agent_name": "has space"}, "agent_name"),
    ({"port": 70000}, "port"),
    ({"default_room_prefix": "bad prefix"}, "default_room_prefix"),
    ({"allowed_origins": ["*"]}, "allowed_origins"),
])
def test_config_validation(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(tmp_path, **overrides)


def test_config_short_secret_warns_and_repr_hides_secret(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="token_server.config"):
        cfg = make_cfg(tmp_path, api_secret="secret")
    assert "at least 32" in caplog.text and cfg.api_secret == "secret"
    assert SECRET not in repr(make_cfg(tmp_path)) and "api_secret" not in repr(cfg)


def test_from_env(tmp_path):
    cfg = TokenServerConfig.from_env({
        "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "LIVEKIT_URL": LIVEKIT_URL, "AGENT_NAME": "bot",
        "TOKEN_TTL_S": "120", "TOKEN_SERVER_HOST": "0.0.0.0", "TOKEN_SERVER_PORT": "9000",
        "WEB_DIR": str(tmp_path), "TOKEN_SERVER_ALLOWED_ORIGINS": "http://a:1, http://b:2/"})
    assert (cfg.mode, cfg.client_url, cfg.agent_name, cfg.token_ttl_s) == ("livekit", LIVEKIT_URL, "bot", 120)
    assert (cfg.host, cfg.port, cfg.web_dir) == ("0.0.0.0", 9000, tmp_path)
    assert cfg.allowed_origins == ("http://a:1", "http://b:2")
    direct = TokenServerConfig.from_env({"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "LIVEKIT_URL": ""})
    assert (direct.mode, direct.client_url, direct.port) == ("direct", OFFER_URL, 8080)
    assert direct.web_dir == REPO / "web"
    with pytest.raises(ConfigError, match="TOKEN_TTL_S=.1h. is not an integer"):
        TokenServerConfig.from_env({"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "TOKEN_TTL_S": "1h"})


def test_from_env_keys_required_unless_dev_keys_allowed():
    with pytest.raises(ConfigError, match="LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        TokenServerConfig.from_env({})
    with pytest.raises(ConfigError, match="LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        TokenServerConfig.from_env({"LIVEKIT_API_KEY": KEY}, allow_dev_keys=True)  # half a pair
    with pytest.raises(ConfigError):  # LiveKit mode needs the server's real keys
        TokenServerConfig.from_env({"LIVEKIT_URL": LIVEKIT_URL}, allow_dev_keys=True)
    a, b = (TokenServerConfig.from_env({}, allow_dev_keys=True) for _ in range(2))
    assert a.mode == "direct" and len(a.api_secret) >= 32 and a.api_secret != b.api_secret


def _clean_env(**extra: str) -> dict[str, str]:
    prefixes = ("LIVEKIT_", "AGENT_", "TOKEN_", "WEB_DIR")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)}, **extra}


def test_cli_without_keys_exits_2():
    proc = subprocess.run([sys.executable, "-m", "token_server"], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must both be set" in proc.stderr


def test_cli_serves_and_logs_mode(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _clean_env(LIVEKIT_API_KEY=KEY, LIVEKIT_API_SECRET=SECRET, WEB_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "token_server", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 30, None
        while time.monotonic() < deadline and health is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    health = json.load(resp)
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.1)
        assert health == {"status": "ok", "mode": "direct"}
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert f"mode=direct: the page will connect to {OFFER_URL}" in stderr
    assert SECRET not in stderr
