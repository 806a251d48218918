"""scripts/start_all.sh for real: bad configuration fails fast with a clear message and leaves
nothing behind; the full cycle start -> status -> restart -> 10-turn soak (scripts/soak.py over
direct WebRTC) -> stop leaves no process of the run; the default bring-up of a machine without a GPU
(the real CPU stand-ins for Omni, LiveKit mode on the project's own server) passes the 10-turn soak
as a room participant and talks to a browser; an external LiveKit deployment (LIVEKIT_URL) does too.

Each test gets its own run folder (RUN_DIR) and free ports, so a developer's run/ is untouched.
The fail-fast and full-cycle tests take STT + LLM from the fake Omni server, pointed at EXPLICITLY
through OMNI_BASE_URL (start_all never chooses it); the default bring-up installs the stand-ins when
missing (the cpu_backends_venv fixture). HF_HUB_OFFLINE and an empty HF_HOME make the TTS choice
the tiny test checkpoint even where a real one is cached.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.launch import read_chosen
from testing.fake_omni import FakeOmni, FakeOmniThread
from testing.ports import free_port, free_port_block
from testing.utterances import SENTENCES

ROOT = Path(__file__).resolve().parents[1]
START_ALL = ROOT / "scripts" / "start_all.sh"

pytestmark = [pytest.mark.slow, pytest.mark.system]
FAIL_FAST_S = 30  # a bad configuration must be reported well before any health-check timeout



@pytest.fixture(scope="module")
def fake_omni() -> Iterator[FakeOmniThread]:
    sentences = itertools.cycle(SENTENCES)
    # short replies: the tiny test voice speaks until its frame cap, ~3 s for two words
    with FakeOmniThread(FakeOmni(transcripts=lambda _wav: next(sentences), reply=lambda _m: "Sure thing.")) as fake:
        yield fake


@pytest.fixture
def run_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of one start_all run; whatever it started is stopped afterwards."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMNI_", "TTS_", "LIVEKIT_", "DIRECT_", "TOKEN_SERVER_", "AGENT_"))}
    env |= {"RUN_DIR": str(tmp_path / "run"), "TOKEN_SERVER_PORT": str(free_port()),
            "DIRECT_PORT": str(free_port()), "AGENT_TRACES_DIR": str(tmp_path / "traces"),
            "AGENT_HEALTH_PORT": str(free_port()), "LIVEKIT_PORT": str(free_port_block()),
            "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "STOP_TIMEOUT_S": "10"}
    yield env
    start_all("stop", env, timeout=60)


def start_all(command: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(START_ALL), command], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def processes_of_run(run_dir: str) -> list[psutil.Process]:
    """Every live process started by that run: they all inherit its RUN_DIR."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("RUN_DIR") == run_dir:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def assert_nothing_left(env: dict[str, str]) -> None:
    pid_dir = Path(env["RUN_DIR"]) / "pids"
    assert not list(pid_dir.glob("*.pid")), f"pid files left: {list(pid_dir.glob('*.pid'))}"
    left = processes_of_run(env["RUN_DIR"])
    assert not left, f"processes of the run left: {[(p.pid, p.cmdline()) for p in left]}"


def soak(env: dict[str, str], page: str, report_path: Path, timeout: float, *extra: str) -> dict:
    """scripts/soak.py --turns 10 (and `extra` options) against the running system; its report after
    the common checks. Without `extra`: one session, 0 errors, 2 barge-ins."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--turns", "10", "--json",
                           str(report_path), "--base", page, *extra], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    print(done.stdout)  # the soak's summary table (pytest -s, or the failure report, shows it)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "RESULT: PASS" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["traces_complete"] and not report["leaks"]["problems"], report["failures"]
    assert report["test_voice"] is True  # what makes the page show its test-voice banner
    assert report_path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    if not extra:
        assert report["turns_completed"] >= 10 and report["errors"] == 0, report["failures"]
        assert report["barge_ins"]["attempted"] == 2
    return report


def assert_bench_duplex(env: dict[str, str], page: str, report_path: Path, barge_ins: int = 3,
                        *extra: str, calls: int = 1) -> None:
    """scripts/bench_duplex.py, short. Its stages happen in order on one clock, every barge-in silences
    the agent at the listener (the early pause before the VAD's confirmation) and every turn is heard,
    its wait split into deciding the turn was over, the models and the rest (bounds: behaviour, not
    speed). `extra`: e.g. --browser, the page in real Chromium as the user; `calls`: that many calls,
    pooled, each with its own listener path in the report."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_duplex.py"), "--barge-ins", str(barge_ins),
                           "--calls", str(calls), "--json", str(report_path), "--base", page, *extra], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    # a barge-in planned ahead (--browser) may land after a short reply has ended: at least one counts
    assert report["failures"] == [] and report["barge_ins_counted"] >= (barge_ins - 1 if not extra else 1), report
    for b in (b for b in report["barge_ins"] if b["agent_was_audible"]):
        assert None not in (b["paused"], b["vad_detected"], b["cut"], b["agent_silent"], b["heard_silent"]), b
        assert b["agent_onset"] <= b["paused"] <= b["vad_detected"] <= b["cut"] and b["heard_silent"] < 5000, b
    heard = [t for t in report["turns"] if t["heard"] is not None and t["published"] is not None]
    assert len(heard) >= 2 * barge_ins, report["turns"]  # each utterance answered (a cut reply was heard first)
    for t in heard:
        assert t["end_of_speech"] is not None and t["end_of_speech"] <= t["committed"] <= t["published"] <= t["heard"], t
        assert t["endpointing_wait"] >= t["end_of_speech"] and t["model_time"] > 0, t
    if "--browser" in extra:  # the page's playout stamps: each reply's first packet, after it left the agent
        assert report["page"]["played_by"] == ("audio level" if report["mode"] == "direct" else "payload size")
        played = [t for t in heard if t["played"] is not None]
        assert len(played) >= len(heard) - 1 and all(t["published"] < t["played"] for t in played), report["turns"]
    assert len(report["calls"]) == calls and all(c["published_to_heard_ms"]["n"] >= 1 for c in report["calls"])
    assert report_path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def run_pids(run_dir: Path) -> dict[str, int]:
    return {f.stem: int(f.read_text().split()[0]) for f in (run_dir / "pids").glob("*.pid")}


def assert_stopped(env: dict[str, str], pids: dict[str, int]) -> None:
    stopped = start_all("stop", env, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids.values()), pids
    assert_nothing_left(env)
    assert start_all("stop", env, timeout=60).returncode == 0  # idempotent
    assert start_all("status", env, timeout=60).returncode != 0


def assert_fails_fast(env: dict[str, str], *expected: str) -> str:
    started = time.monotonic()
    result = start_all("start", env, timeout=FAIL_FAST_S * 2)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < FAIL_FAST_S, f"took {elapsed:.1f} s to fail:\n{output}"
    assert "ERROR:" in output and "fix:" in output, output
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"
    assert_nothing_left(env)
    return output


def test_unreachable_omni_fails_fast(run_env):
    run_env["OMNI_BASE_URL"] = "http://127.0.0.1:9/v1"
    assert_fails_fast(run_env, "OMNI_BASE_URL=http://127.0.0.1:9/v1 is not reachable", "Connection refused")


def test_missing_checkpoint_folder_fails_fast(run_env, fake_omni):
    run_env |= {"OMNI_BASE_URL": fake_omni.url, "TTS_MODEL": "/no/such/folder"}
    assert_fails_fast(run_env, "TTS_MODEL=/no/such/folder: no such checkpoint folder")


def test_unreachable_livekit_server_fails_fast(run_env, fake_omni):
    run_env |= {"OMNI_BASE_URL": fake_omni.url, "LIVEKIT_URL": "ws://127.0.0.1:9",
                "LIVEKIT_API_KEY": "key-1", "LIVEKIT_API_SECRET": "s" * 32}
    output = assert_fails_fast(run_env, "the LiveKit server LIVEKIT_URL=ws://127.0.0.1:9 is not reachable",
                               "unset LIVEKIT_URL to use the project's own LiveKit server")
    assert "transport: livekit - LIVEKIT_URL is set" in output


def test_livekit_url_without_its_key_pair_fails_fast(run_env, fake_omni):
    run_env |= {"OMNI_BASE_URL": fake_omni.url, "LIVEKIT_URL": "ws://127.0.0.1:7880"}
    assert_fails_fast(run_env, "LIVEKIT_URL is set (ws://127.0.0.1:7880) but LIVEKIT_API_KEY / LIVEKIT_API_SECRET "
                               "are not")


def test_port_in_use_fails_fast(run_env, fake_omni):
    run_env["OMNI_BASE_URL"] = fake_omni.url
    port = int(run_env["TOKEN_SERVER_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        output = assert_fails_fast(run_env, f"port {port} (the token server) is in use by pid {os.getpid()}",
                                   "TOKEN_SERVER_PORT=")
    assert "] started " not in output  # the check comes before anything starts


def test_start_status_soak_stop(run_env, fake_omni, tmp_path):
    # OMNI_TIMEOUT_S: the injected STT hang (below) fails its turn after 2 x 3 s, not 2 x 15 s
    run_env |= {"OMNI_BASE_URL": fake_omni.url, "AGENT_TRANSPORT": "direct", "OMNI_TIMEOUT_S": "3"}
    run_dir, page = Path(run_env["RUN_DIR"]), f"http://127.0.0.1:{run_env['TOKEN_SERVER_PORT']}"

    started = start_all("start", run_env)
    out = started.stdout + started.stderr
    assert started.returncode == 0, out
    assert "transport: direct - AGENT_TRANSPORT=direct" in out and "STT + LLM: external" in out, out
    assert "RANDOM-WEIGHT TEST VOICE" in out, out  # the loud warning (the page shows it from test_voice)
    assert f"open {page}" in out, out
    assert stat.S_IMODE((run_dir / "chosen.env").stat().st_mode) == 0o600
    pids = run_pids(run_dir)
    assert set(pids) == {"agent", "token_server"}, pids

    status = start_all("status", run_env, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" healthy ") == 2, status.stdout

    again = start_all("start", run_env, timeout=60)  # idempotent: a healthy system is left alone
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert run_pids(run_dir) == pids

    restarted = start_all("restart", run_env)
    out = restarted.stdout + restarted.stderr
    assert restarted.returncode == 0, out
    assert "reused from" in out, out  # the generated key pair survives a restart
    pids = run_pids(run_dir)

    report = soak(run_env, page, tmp_path / "soak.json", timeout=400)
    assert set(report["memory"]) == {"agent", "token_server"}
    assert_bench_duplex(run_env, page, tmp_path / "bench_duplex.json", calls=2)
    assert_bench_duplex(run_env, page, tmp_path / "bench_duplex_browser.json", 2, "--browser")

    # faults on every 7th turn (STT 500, STT timeout, LLM cut mid-stream, LLM 500, in turn), two
    # sessions at once: the faulty turns fail with an error, every other turn and both sessions go on
    fake_omni.loop.call_soon_threadsafe(fake_omni.fake.fault_every, 7)
    try:
        report = soak(run_env, page, tmp_path / "faults.json", 600, "--turns", "14", "--sessions", "2",
                      "--max-failed-turns", "4", "--barge-in-every", "4")
    finally:
        fake_omni.loop.call_soon_threadsafe(fake_omni.fake.fault_every, 0)
    assert fake_omni.fake.faulty_turns >= 3, fake_omni.fake.faulty_turns
    assert 1 <= report["failed_turns"] <= fake_omni.fake.faulty_turns, report["failures"]
    assert report["turns_completed"] >= 28 - report["failed_turns"] and report["timeouts"] == 0
    # no session was lost: each completed every turn that was not faulty (the server's every-7th-turn
    # faults fall on either session, so one may get three of them and the other one)
    assert all(s["turns_completed"] >= 14 - s["failed_turns"] for s in report["sessions"]), report["sessions"]

    assert_stopped(run_env, pids)


def test_default_bringup_with_cpu_standins_soaks_4_sessions(run_env, cpu_backends_venv, tmp_path):
    """What a fresh machine without a GPU gets from the README's command: real Whisper base and
    SmolLM2 (llama.cpp) behind the Omni API, the tiny test voice, and LiveKit mode on the project's
    own LiveKit server (scripts/test.sh installed it; start_all would build it itself). Four people
    talk at once (the default session limit), barging in on every third turn: on two cores their
    requests queue at the stand-ins' router for seconds, and every turn still gets a whole reply."""
    run_env |= {"OMNI_LOCAL_PORT": str(free_port()), "WHISPER_PORT": str(free_port()), "LLM_PORT": str(free_port()),
                "BACKENDS_VENV": cpu_backends_venv}
    page = f"http://127.0.0.1:{run_env['TOKEN_SERVER_PORT']}"
    started = start_all("start", run_env, timeout=900)
    out = started.stdout + started.stderr
    assert started.returncode == 0, out
    assert "transport: livekit - no LIVEKIT_URL: starting the project's LiveKit server" in out, out
    assert "STT + LLM: cpu-standins" in out, out
    assert "LLM_MAX_TOKENS=24" in out, out  # short replies: the test voice speaks ~0.4 s per character
    run_dir = Path(run_env["RUN_DIR"])
    pids = run_pids(run_dir)
    assert set(pids) == {"livekit", "whisper", "llm", "omni_router", "agent", "token_server"}, pids
    status = start_all("status", run_env, timeout=60)
    assert status.returncode == 0 and status.stdout.count(" healthy ") == 6, status.stdout
    # the generated secret is in 0600 files only, never on a command line
    secret = read_chosen(run_dir / "chosen.env").get("GENERATED_API_SECRET")
    assert secret and len(secret) >= 32
    assert stat.S_IMODE((run_dir / "livekit" / "livekit.yaml").stat().st_mode) == 0o600
    assert not [p.pid for p in processes_of_run(str(run_dir)) if secret in " ".join(p.cmdline())]

    # --turn-timeout: a reply may start only after the other sessions' queued requests (~60 s seen)
    report = soak(run_env, page, tmp_path / "soak.json", 1800, "--sessions", "4", "--barge-in-every", "3",
                  "--turn-timeout", "180")
    assert report["mode"] == "livekit" and report["leaks"]["metrics"]["active_sessions"] == 0
    assert report["errors"] == 0 and report["timeouts"] == 0, report["failures"]
    # every utterance answered; on two loaded cores one may reach the agent as two transcripts, and a
    # reply heard between them makes two answered turns of it
    assert all(s["turns_completed"] >= 10 for s in report["sessions"]), report["failures"]
    assert report["barge_ins"]["attempted"] >= 8
    assert set(report["memory"]) == set(pids)
    assert all(t["user_text"] for t in report["turns"])  # Whisper heard words in every utterance

    # and a person can talk to it in a browser: real Chromium, the page the README says to open
    state = talk_in_chromium(page, "What time does the library open tomorrow", tmp_path)
    assert state["mode"] == "livekit" and state["errors"] == [], state["errors"]
    heard = [t["text"].lower() for t in state["transcripts"] if t["role"] == "user"]
    assert any("library" in text for text in heard), heard  # Whisper, not a script, heard the page's mic
    assert state["turns"][0]["voice_to_voice_ms"] is not None and state["agentRmsMax"] > 0.02
    assert state["testVoiceBanner"]  # the page warns that this is the random-weight test voice
    assert_stopped(run_env, pids)


def talk_in_chromium(page_url: str, sentence: str, tmp_path: Path) -> dict:
    """Open the page in Chromium with a WAV file as its microphone, press connect, say the sentence,
    and return the page's state (window.S) once it shows a turn and heard the agent."""
    from playwright.sync_api import sync_playwright

    from testing.harness import speech_wav

    spoken = speech_wav(sentence, tmp_path / "mic-speech.wav", rate=48000)
    mic = tmp_path / "mic.wav"
    subprocess.run(["sox", str(spoken), str(mic), "pad", "1.5", "6"], check=True)  # silence around it
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=[
            "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop", "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection"])
        try:
            tab = browser.new_page()
            tab.goto(page_url + "/")
            tab.click("#connect")
            # polled through the DevTools protocol: the page's CSP forbids wait_for_function's in-page eval
            deadline = time.monotonic() + 120
            while not tab.evaluate("window.S.turns.length >= 1 && window.S.agentRmsMax > 0.02"):
                assert time.monotonic() < deadline, "the page never heard a reply"
                time.sleep(0.2)
            state = tab.evaluate("window.S")
            state["testVoiceBanner"] = tab.locator("#test-voice").is_visible()
        finally:
            browser.close()
    return state


def test_external_livekit_deployment_soaks_10_turns_as_a_room_participant(run_env, fake_omni, livekit_server,
                                                                            tmp_path):
    """LIVEKIT_URL + its key pair select a LiveKit deployment that start_all does not own."""
    run_env |= livekit_server.env() | {"OMNI_BASE_URL": fake_omni.url}
    page = f"http://127.0.0.1:{run_env['TOKEN_SERVER_PORT']}"
    started = start_all("start", run_env)
    out = started.stdout + started.stderr
    assert started.returncode == 0, out
    assert "transport: livekit - LIVEKIT_URL is set" in out, out
    pids = run_pids(Path(run_env["RUN_DIR"]))
    assert set(pids) == {"agent", "token_server"}, pids  # the deployment is not ours to start or stop
    report = soak(run_env, page, tmp_path / "soak.json", timeout=400)
    assert report["mode"] == "livekit" and report["leaks"]["metrics"]["active_sessions"] == 0
    assert report["latency"]["stages"]["client_barge_in_to_silence_ms"]["n"] >= 1  # heard at the participant
    # the page in LiveKit mode: its playout stamps are told by payload size (the SFU drops the level header)
    assert_bench_duplex(run_env, page, tmp_path / "bench_duplex_browser.json", 2, "--browser")
    assert_stopped(run_env, pids)


@pytest.mark.parametrize("extra,expected", [
    ({"AGENT_TRANSPORT": "carrier-pigeon"}, "AGENT_TRANSPORT=carrier-pigeon is not a transport"),
    ({"AGENT_TRANSPORT": "direct", "LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k",
      "LIVEKIT_API_SECRET": "s" * 32}, "AGENT_TRANSPORT=direct but LIVEKIT_URL is set"),
])
def test_bad_transport_choice_fails_fast(run_env, fake_omni, extra, expected):
    run_env |= {"OMNI_BASE_URL": fake_omni.url, **extra}
    assert_fails_fast(run_env, expected)


def test_without_go_or_a_livekit_server_auto_falls_back_to_direct_mode(run_env, tmp_path):
    """No binary in the tool folder and no Go to build one: a warning says why, and direct mode runs
    (here it stops at the unreachable Omni endpoint, right after the choice is printed)."""
    run_env |= {"TOOLS_DIR": str(tmp_path / "no-tools"), "OMNI_BASE_URL": "http://127.0.0.1:9/v1",
                "PATH": os.pathsep.join(p for p in run_env["PATH"].split(os.pathsep)
                                        if not (Path(p) / "go").exists())}
    output = assert_fails_fast(run_env, "OMNI_BASE_URL=http://127.0.0.1:9/v1 is not reachable")
    assert "WARNING: LiveKit mode is not available: no LiveKit server at" in output, output
    assert "transport: direct - no LIVEKIT_URL and no LiveKit server here" in output, output
