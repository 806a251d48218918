"""The page in real Chromium (Debian's, driven by Playwright's Python package), direct mode:
token server -> page -> WebRTC -> the agent's direct server -> real AgentSession, real Silero,
the tiny TTS engine and the fake Omni server. Each browser's microphone is a WAV file."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from aiohttp import web

from agent.direct.config import DirectServerConfig
from agent.direct.server import make_app as make_direct_app
from testing.fake_omni import FakeOmni
from testing.harness import agent_config, scripted
from token_server import TokenServerConfig
from token_server import make_app as make_token_app

torch.set_num_threads(1)
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed")]

KEY, SECRET = "testkey", "a-test-secret-that-is-long-enough-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
LONG_REPLY = ("Here is a long answer about the sea, the wind and the old lighthouse keeper who counted "
              "every wave that broke on the rocks below his window for forty long years.")


def mic_wav(path: Path, *parts: tuple[str, float]) -> Path:
    """A 48 kHz microphone track: each part is (text to speak, seconds of silence before it)."""
    pieces = []
    for i, (text, gap) in enumerate(parts):
        raw, piece = path.with_suffix(f".{i}.raw.wav"), path.with_suffix(f".{i}.wav")
        subprocess.run(["espeak-ng", "-s", "165", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(piece), "pad", str(gap), "0"],
                       check=True)
        pieces.append(str(piece))
    subprocess.run(["sox", *pieces, str(path), "pad", "0", "6"], check=True)  # trailing silence
    return path.resolve()


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]






class System:
    """Token server + direct agent server on loopback ports, and a Chromium factory."""

    def __init__(self, engine, vad, omni: FakeOmni, tmp: Path) -> None:
        self.engine, self.vad, self.omni, self.tmp = engine, vad, omni, tmp
        self.runners: list[web.AppRunner] = []
        self.browsers: list = []

    async def start(self, agent_secret: str = SECRET, agent_running: bool = True) -> str:
        omni_url = await self.omni.start()
        token_runner, token_port = await _serve(web.Application())  # reserve the page's port first
        await token_runner.cleanup()
        origin = f"http://127.0.0.1:{token_port}"
        direct_cfg = DirectServerConfig(api_key=KEY, api_secret=agent_secret, port=0, allowed_origins=(origin,))
        direct_app = make_direct_app(direct_cfg, agent_config(omni_url, self.tmp / "traces"), self.engine, self.vad)
        direct_runner, direct_port = await _serve(direct_app)
        if agent_running:
            self.runners.append(direct_runner)
        else:
            await direct_runner.cleanup()  # a stopped agent: nothing listens on its port any more
        token_cfg = TokenServerConfig(api_key=KEY, api_secret=SECRET, port=token_port,
                                      agent_offer_url=f"http://127.0.0.1:{direct_port}/api/offer")
        runner = web.AppRunner(make_token_app(token_cfg))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", token_port).start()
        self.runners.append(runner)
        return origin

    async def browser(self, wav: Path):
        from playwright.async_api import async_playwright

        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--disable-gpu", "--disable-quic", "--disable-sync", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection"])
        self.browsers.append((pw, browser))
        return browser

    async def close(self) -> None:
        for pw, browser in self.browsers:
            await browser.close()
            await pw.stop()
        for runner in reversed(self.runners):
            await runner.cleanup()
        await self.omni.stop()


async def _open_page(browser, origin: str):
    page = await browser.new_page()
    await page.goto(origin + "/")
    await page.click("#connect")
    return page


async def wait_in_page(page, expression: str, timeout_s: float = 40) -> None:
    """Poll `expression` in the page. Not page.wait_for_function: Playwright's poller evals the
    predicate inside the page, which the page's Content-Security-Policy (no 'unsafe-eval') forbids;
    page.evaluate goes through the DevTools protocol, which the CSP does not govern."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await page.evaluate(expression):
        if loop.time() > deadline:
            errors = await page.evaluate("window.S && window.S.errors")
            raise AssertionError(f"timed out after {timeout_s} s waiting for {expression}; page errors: {errors}")
        await asyncio.sleep(0.1)


async def test_speak_and_hear_the_agent_with_a_complete_latency_turn(engine, vad, tmp_path):
    wav = mic_wav(tmp_path / "hello.wav", ("Hello there how are you today", 1.5))
    system = System(engine, vad, FakeOmni(transcripts=scripted("Hello there how are you today"),
                                          reply=lambda m: "I am fine, thank you for asking."), tmp_path)
    try:
        origin = await system.start()
        page = await _open_page(await system.browser(wav), origin)
        await wait_in_page(page, "window.S.turns.length >= 1 && window.S.agentRmsMax > 0.02")
        state = await page.evaluate("window.S")
        assert state["mode"] == "direct" and state["errors"] == []
        assert {"role": "user", "text": "Hello there how are you today", "interrupted": False} in state["transcripts"]
        turn = state["turns"][0]
        for key in ["voice_to_voice_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "tts_first_to_publish_ms"]:
            assert turn[key] is not None and turn[key] >= 0, key
        assert await page.locator("#latency tbody tr").count() >= 1
        assert await page.locator("#test-voice").is_visible()  # the tiny checkpoint is a test voice
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "one_turn.png"), full_page=True)
    finally:
        await system.close()


async def test_barge_in_stops_the_agent_audio_at_the_page_and_the_next_reply_follows(engine, vad, tmp_path):
    wav = mic_wav(tmp_path / "barge.wav", ("Tell me a long story", 1.5), ("Wait stop I have a question", 3.0))
    replies = iter([LONG_REPLY, "Sure, go ahead."])
    system = System(engine, vad, FakeOmni(transcripts=scripted("Tell me a long story", "Wait stop I have a question"),
                                          reply=lambda m: next(replies, "Okay."), llm_token_interval_s=0.1), tmp_path)
    try:
        origin = await system.start()
        page = await _open_page(await system.browser(wav), origin)
        await wait_in_page(page, "window.S.turns.length >= 2 && window.S.transcripts.filter(t => t.role == 'agent').length >= 2",
                    timeout_s=60)
        state = await page.evaluate("window.S")
        cut = state["turns"][0]
        assert cut["interrupted"] is True and cut["cancel_to_silence_ms"] is not None
        agent_lines = [t for t in state["transcripts"] if t["role"] == "agent"]
        assert agent_lines[0]["interrupted"] and len(agent_lines[0]["text"]) < len(LONG_REPLY)
        assert agent_lines[-1]["text"] == "Sure, go ahead."
        # at the page: the agent's audio went quiet after the cut, then the next reply was heard
        levels = state["agentRms"]
        loud = [t for t, rms in levels if rms > 0.02]
        gaps = [b - a for a, b in zip(loud, loud[1:], strict=False)]
        assert max(gaps) > 300, "the cut reply must stop before the next reply starts"
    finally:
        await system.close()


async def test_two_pages_talk_at_the_same_time_in_independent_sessions(engine, vad, tmp_path):
    wav = mic_wav(tmp_path / "both.wav", ("What is the weather like tomorrow", 1.5))
    system = System(engine, vad, FakeOmni(transcripts=lambda wav: "What is the weather like tomorrow",
                                          reply=lambda m: "Sunny, probably."), tmp_path)
    try:
        origin = await system.start()
        browser = await system.browser(wav)
        pages = await asyncio.gather(_open_page(browser, origin), _open_page(browser, origin))
        await asyncio.gather(*(wait_in_page(p, "window.S.turns.length >= 1 && window.S.agentRmsMax > 0.02", 60) for p in pages))
        states = [await p.evaluate("window.S") for p in pages]
        assert states[0]["sessionId"] and states[0]["sessionId"] != states[1]["sessionId"]
        for state in states:
            assert state["errors"] == [] and any(t["role"] == "user" for t in state["transcripts"])
            assert state["turns"][0]["session_id"] == state["sessionId"]
    finally:
        await system.close()


@pytest.mark.parametrize("case,message", [("rejected_token", "token rejected by the agent"),
                                          ("stopped_agent", "agent unreachable")])
async def test_rejected_token_and_stopped_agent_show_visible_errors(engine, vad, tmp_path, case, message):
    wav = mic_wav(tmp_path / "x.wav", ("Hello", 1.0))
    system = System(engine, vad, FakeOmni(transcripts=scripted("Hello"), reply=lambda m: "Hi."), tmp_path)
    try:
        origin = await system.start(agent_secret="another-secret-the-token-server-does-not-know-0123",
                                    agent_running=case != "stopped_agent")
        page = await _open_page(await system.browser(wav), origin)
        await page.wait_for_selector("#error:not([hidden])", timeout=20000)
        assert message in await page.locator("#error").inner_text()
    finally:
        await system.close()
