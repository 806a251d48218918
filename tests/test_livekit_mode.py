"""LiveKit mode against a real LiveKit server (the project's own, scripts/install_livekit.sh): the page
in real Chromium talks to a real `python -m agent start` worker through a room. The worker is
dispatched by name through the token's roomConfig, the way the token server mints it."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web
from livekit_fixtures import AgentWorker
from test_browser import LONG_REPLY, System, mic_wav, wait_in_page

from testing.fake_omni import FakeOmni, FakeOmniThread
from testing.harness import scripted
from token_server import TokenServerConfig
from token_server import make_app as make_token_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_page_talks_to_the_worker_through_a_room_and_barges_in(livekit_server, tiny_checkpoint, tmp_path):
    replies = iter([LONG_REPLY, "Sure, go ahead."])
    fake = FakeOmni(transcripts=scripted("Tell me a long story", "Wait stop I have a question"),
                    reply=lambda m: next(replies, "Okay."), llm_token_interval_s=0.1)
    agent_name = f"voice-{os.getpid()}"
    with FakeOmniThread(fake) as omni:
        worker = AgentWorker(livekit_server, tmp_path, "page", {
            "OMNI_BASE_URL": omni.url, "TTS_MODEL": tiny_checkpoint, "AGENT_NAME": agent_name}).start()
        system = System(None, None, fake, tmp_path)
        runner = None
        try:
            health = await asyncio.to_thread(worker.wait_healthy)
            assert health["agent_name"] == agent_name and health["worker_id"]
            cfg = TokenServerConfig(api_key=livekit_server.api_key, api_secret=livekit_server.api_secret,
                                    livekit_url=livekit_server.url, agent_name=agent_name, port=0)
            runner = web.AppRunner(make_token_app(cfg))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
            wav = mic_wav(tmp_path / "barge.wav", ("Tell me a long story", 1.5), ("Wait stop I have a question", 3.0))
            page = await (await system.browser(wav)).new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            await page.goto(origin + "/")
            await page.click("#connect")
            try:
                await wait_in_page(page, "window.S.turns.length >= 2 && "
                                         "window.S.transcripts.filter(t => t.role == 'agent').length >= 2", 120)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; console: {console[-15:]}") from None
            assert not [m for m in console if "Content Security Policy" in m], console  # the page runs under it
            state = await page.evaluate("window.S")
            assert state["mode"] == "livekit" and state["errors"] == [], state["errors"]
            said = [t["text"] for t in state["transcripts"] if t["role"] == "user"]
            assert said[:2] == ["Tell me a long story", "Wait stop I have a question"]
            agent_lines = [t for t in state["transcripts"] if t["role"] == "agent"]
            assert agent_lines[0]["interrupted"] and len(agent_lines[0]["text"]) < len(LONG_REPLY)
            assert agent_lines[-1]["text"] == "Sure, go ahead."
            cut = state["turns"][0]
            assert cut["interrupted"] is True and cut["cancel_to_silence_ms"] is not None
            # at the page: the agent was heard, went quiet after the cut, then the next reply was heard
            assert state["agentRmsMax"] > 0.02
            loud = [t for t, rms in state["agentRms"] if rms > 0.02]
            gaps = [b - a for a, b in zip(loud, loud[1:], strict=False)]
            assert max(gaps) > 300, "the cut reply must stop before the next reply starts"
        finally:
            for pw, browser in system.browsers:  # the fake Omni belongs to its own thread's loop
                await browser.close()
                await pw.stop()
            if runner is not None:
                await runner.cleanup()
            await asyncio.to_thread(worker.stop)
