"""LiveKit mode end to end: the agent worker joins the page's room by dispatch; the page talks
through livekit-client (served locally). Needs a LiveKit server: runs only when LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET are set (e.g. `livekit-server --dev`: devkey / secret)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from aiohttp import web
from fake_omni import FakeOmni
from test_browser import System, mic_wav

from agent.harness import scripted
from token_server import TokenServerConfig
from token_server import make_app as make_token_app

NEEDED = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not all(os.environ.get(k) for k in NEEDED),
    reason="LiveKit mode needs a LiveKit server: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")]


async def test_page_talks_to_the_worker_through_a_livekit_room(tiny_checkpoint, tmp_path):
    omni = FakeOmni(transcripts=scripted("Hello there how are you today"), reply=lambda m: "Fine, thanks.")
    omni_url = await omni.start()
    agent_name = f"test-agent-{os.getpid()}"
    env = {**os.environ, "OMNI_BASE_URL": omni_url, "TTS_MODEL": tiny_checkpoint, "AGENT_NAME": agent_name,
           "AGENT_TRACES_DIR": str(tmp_path / "traces"), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "agent", "start"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    system = System(None, None, omni, tmp_path)
    runner = None
    try:
        time.sleep(8)  # the worker registers with the LiveKit server
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else "worker exited"
        cfg = TokenServerConfig(api_key=os.environ["LIVEKIT_API_KEY"], api_secret=os.environ["LIVEKIT_API_SECRET"],
                                livekit_url=os.environ["LIVEKIT_URL"], agent_name=agent_name, port=0)
        runner = web.AppRunner(make_token_app(cfg))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
        browser = await system.browser(mic_wav(tmp_path / "hello.wav", ("Hello there how are you today", 3.0)))
        page = await browser.new_page()
        await page.goto(origin + "/")
        await page.click("#connect")
        await page.wait_for_function("window.S.turns.length >= 1 && window.S.agentRmsMax > 0.02", timeout=90000)
        state = await page.evaluate("window.S")
        assert state["mode"] == "livekit" and state["errors"] == []
        assert state["turns"][0]["voice_to_voice_ms"] is not None
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if runner is not None:
            await runner.cleanup()
        for pw, browser in system.browsers:
            await browser.close()
            await pw.stop()
        await omni.stop()
