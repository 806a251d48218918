"""start_all.sh's choices: the environment and what the probes find in, the plan out.

`Planner.start()` decides, in this order and with start_all's own messages: the transport (an external
LiveKit, the project's own LiveKit server, or direct WebRTC) and the token key pair; the STT + LLM
backend (OMNI_BASE_URL, vLLM-Omni on this GPU, or the CPU stand-ins); the TTS checkpoint and device;
the end of turn; the reply length and request timeout the stand-ins need; then it checks every port,
the vLLM-Omni release and GPU split, and the external endpoints, builds the tiny checkpoint when that
is the voice, and returns what start_all.sh writes to chosen.env and launches. A failure raises
LaunchError (what is wrong, and the fix) before anything is started.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path

from token_server.config import TOKEN_ENV
from token_server.env import ConfigError, field_default, given

from ..plugins.omni_config import OmniConfig
from .chosen import Chosen
from .console import Console, LaunchError
from .omni import OmniOnGpu
from .probes import Probes
from .settings import DEFAULT_TTS_HUB_ID, ROOT, START_ENV, StartSettings

HUB_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
AGENT_START_S = 300  # the agent's health-check wait: loading the engine ...
AGENT_DOWNLOAD_S = 1800  # ... or downloading its checkpoint first
# what the CPU stand-ins' router serves: Whisper base transcriptions, SmolLM2 via llama.cpp (plain
# string content, no modalities field)
STANDINS = {"OMNI_STT_STYLE": "transcriptions", "OMNI_MODEL": "smollm2-135m", "OMNI_STT_MODEL": "whisper-base",
            "OMNI_PLAIN_STRING_CONTENT": "1", "OMNI_SEND_MODALITIES": "0"}
# what the services get from the plan when it is set (the caller's value, or the plan's)
PASSED_ON = ("OMNI_STT_STYLE", "OMNI_MODEL", "OMNI_STT_MODEL", "OMNI_PLAIN_STRING_CONTENT", "OMNI_SEND_MODALITIES",
             "LLM_MAX_TOKENS", "OMNI_TIMEOUT_S", "TTS_DEVICE", "LIVEKIT_URL", "AGENT_HOST", "AGENT_HEALTH_PORT")
FIX_SETTING = "set it as the README's configuration tables describe, or unset it"


def client_host(host: str) -> str:
    """An address clients on this machine use for a bind address."""
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def new_key_pair() -> tuple[str, str]:
    return f"key-{secrets.token_hex(6)}", secrets.token_hex(32)


def start_settings(env: Mapping[str, str]) -> StartSettings:
    try:
        return START_ENV.build(env)
    except ConfigError as exc:
        raise LaunchError(str(exc), FIX_SETTING) from None


class Planner:
    """One start's decisions. `env` is read, never changed: the plan's own values go to `self.env`, the
    working copy the services' environment is made from (as start_all's shell variables were)."""

    def __init__(self, env: Mapping[str, str], probes: Probes, console: Console, run_dir: Path, *,
                 previous: Mapping[str, str] | None = None, key_pair: Callable[[], tuple[str, str]] = new_key_pair):
        self.env = dict(env)
        self.probes, self.console, self.run_dir = probes, console, run_dir
        self.previous, self.key_pair = previous or {}, key_pair
        self.settings = start_settings(env)
        self.chosen_file = run_dir / "chosen.env"
        self.omni_gpu = OmniOnGpu(self.env, self.settings, probes, console, run_dir)

    def get(self, name: str) -> str | None:
        return given(self.env, name)

    @cached_property
    def gpu(self) -> bool:
        return self.probes.gpu_present()

    def start(self) -> Chosen:
        self.endpoints()
        self.choose_transport()
        self.choose_omni()
        self.choose_tts()
        self.choose_end_of_turn()
        self.choose_reply_length()
        self.choose_request_timeout()
        self.check_ports()  # fail fast: every port this run needs, before anything starts
        if self.mode == "livekit" and not self.start_livekit:
            self.check_external_livekit()
        if self.omni_source == "external":
            self.check_external_omni()
        if self.build_tiny:
            self.build_tiny_checkpoint()
        return self.chosen()

    # ---- where the services listen ------------------------------------------------------------------

    def endpoints(self) -> None:
        s = self.settings
        try:
            self.token_host, self.token_port = (TOKEN_ENV.value(self.env, f) for f in ("host", "port"))
        except ConfigError as exc:
            raise LaunchError(str(exc), FIX_SETTING) from None
        self.page_url = f"http://{client_host(self.token_host)}:{self.token_port}"
        # the page is served by the token server; its origin must be allowed to send offers to the agent
        self.allowed_origins = (self.get("DIRECT_ALLOWED_ORIGINS")
                                or f"http://127.0.0.1:{self.token_port},http://localhost:{self.token_port}")
        offer_url = self.get("AGENT_OFFER_URL")
        if offer_url is None and s.direct_host not in ("127.0.0.1", "localhost"):
            self.console.warn(f"DIRECT_HOST={s.direct_host} but AGENT_OFFER_URL is unset: pages on other machines "
                              f"need AGENT_OFFER_URL=http://<this machine's LAN address>:{s.direct_port}/api/offer "
                              "(and DIRECT_ICE_HOSTS)")
        self.offer_url = offer_url or f"http://{client_host(s.direct_host)}:{s.direct_port}/api/offer"

    # ---- transport and key pair ---------------------------------------------------------------------

    def choose_transport(self) -> None:
        """auto: an external LiveKit (LIVEKIT_URL), else the project's own LiveKit server started here,
        else direct WebRTC. livekit / direct: that one or an error."""
        want, s = self.settings.transport, self.settings
        if want not in ("auto", "livekit", "direct"):
            raise LaunchError(f"AGENT_TRANSPORT={want} is not a transport", "use auto (the default), livekit or direct")
        key, secret, url = self.get("LIVEKIT_API_KEY"), self.get("LIVEKIT_API_SECRET"), self.get("LIVEKIT_URL")
        if (key is None) != (secret is None):
            raise LaunchError("only one of LIVEKIT_API_KEY / LIVEKIT_API_SECRET is set",
                              "set both (the pair tokens are signed and verified with), or neither to have one generated")
        self.start_livekit = False
        if url is not None:
            if want == "direct":
                raise LaunchError(f"AGENT_TRANSPORT=direct but LIVEKIT_URL is set ({url})", "unset one of them")
            if key is None or secret is None:
                raise LaunchError(f"LIVEKIT_URL is set ({url}) but LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not",
                                  "export the key pair your LiveKit server verifies tokens with, or unset LIVEKIT_URL "
                                  "to use the project's own server (or direct mode)")
            self.mode, self.keys = "livekit", (key, secret, "environment")
            self.mode_why = f"LIVEKIT_URL is set ({url}): an external LiveKit deployment"
        elif want != "direct" and (missing := self.local_livekit_server()) is None:
            self.mode, self.start_livekit = "livekit", True
            if s.livekit_bind in ("0.0.0.0", "::"):
                if not s.livekit_node_ip:
                    raise LaunchError(f"LIVEKIT_BIND={s.livekit_bind} needs LIVEKIT_NODE_IP", "set LIVEKIT_NODE_IP "
                                      "to this machine's LAN address: the one browsers on other machines reach")
                url = f"ws://{s.livekit_node_ip}:{s.livekit_port}"
            else:
                url = f"ws://{s.livekit_bind}:{s.livekit_port}"
            self.env["LIVEKIT_URL"] = url
            self.keys = self.choose_key_pair()
            self.mode_why = (f"no LIVEKIT_URL: starting the project's LiveKit server at {url} "
                             f"({self.probes.livekit_version()})")
        elif want == "livekit":
            raise LaunchError(f"AGENT_TRANSPORT=livekit but there is no LiveKit server: {missing}",
                              "run bash scripts/install_livekit.sh (it says what it needs), set LIVEKIT_URL to a "
                              "deployment, or use AGENT_TRANSPORT=direct")
        else:
            self.mode = "direct"
            if want == "direct":
                self.mode_why = "AGENT_TRANSPORT=direct: the page talks WebRTC straight to the agent"
            else:
                self.console.warn(f"LiveKit mode is not available: {missing}")
                self.mode_why = "no LIVEKIT_URL and no LiveKit server here: the page talks WebRTC straight to the agent"
            self.keys = self.choose_key_pair()
        if self.mode == "livekit":
            self.env["AGENT_HEALTH_PORT"] = str(s.agent_health_port)
        self.console.say(f"transport: {self.mode} - {self.mode_why}")
        self.console.say(f"token key pair: key {self.keys[0]}, {self.keys[2]}")

    def local_livekit_server(self) -> str | None:
        """The project's LiveKit server (.tools/bin, from scripts/install_livekit.sh), installed now when
        Go is there and it is missing (minutes, once). None when it is there, else why it is not."""
        binary = self.probes.livekit_binary()
        if self.probes.executable(binary):
            return None
        if not self.probes.go_present():
            return (f"no LiveKit server at {binary} and no Go to build it (scripts/install_livekit.sh says how to "
                    "get one)")
        log = self.run_dir / "logs" / "livekit-install.log"
        self.console.say(f"installing the LiveKit server (scripts/install_livekit.sh -> {binary}; the first build "
                         "takes 3-5 minutes)")
        return None if self.probes.install_livekit(log) else f"building the LiveKit server failed (log: {log})"

    def choose_key_pair(self) -> tuple[str, str, str]:
        """The caller's pair, else one generated earlier and kept in chosen.env (so a restart keeps
        pages' tokens valid), else a new one: (key, secret, where it came from)."""
        key, secret = self.get("LIVEKIT_API_KEY"), self.get("LIVEKIT_API_SECRET")
        if key is not None and secret is not None:
            return key, secret, "environment"
        if self.previous.get("GENERATED_API_KEY"):
            return (self.previous["GENERATED_API_KEY"], self.previous.get("GENERATED_API_SECRET", ""),
                    f"generated earlier, reused from {self.chosen_file}")
        return *self.key_pair(), f"generated now, kept in {self.chosen_file} (mode 0600)"

    # ---- STT + LLM ----------------------------------------------------------------------------------

    def choose_omni(self) -> None:
        port = self.settings.omni_local_port
        if self.get("OMNI_BASE_URL") is not None:
            self.omni_source, why = "external", "OMNI_BASE_URL is set"
        elif self.gpu and self.omni_gpu.find():
            self.omni_source = "vllm-omni"
            self.env["OMNI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
            why = f"vLLM-Omni is installed and a GPU is present: starting {self.omni_model} on port {port}"
        else:
            self.omni_source = "cpu-standins"
            self.env["OMNI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
            self.env.update(STANDINS)
            why = "no OMNI_BASE_URL and " + ("vLLM-Omni is not installed" if self.gpu else "no GPU")
            why += (": starting the CPU stand-ins (Whisper base + SmolLM2-135M behind one OpenAI-compatible router "
                    f"at {self.env['OMNI_BASE_URL']})")
        self.omni_why = why
        self.console.say(f"STT + LLM: {self.omni_source} - {why}")

    @property
    def omni_model(self) -> str:
        return self.get("OMNI_MODEL") or field_default(OmniConfig, "model")

    # ---- TTS ----------------------------------------------------------------------------------------

    def choose_tts(self) -> None:
        self.test_voice = self.build_tiny = False
        self.agent_timeout_s = AGENT_START_S
        if self.get("TTS_DEVICE") is None and self.gpu:
            self.env["TTS_DEVICE"] = "cuda"
            self.console.say("TTS device: cuda (a GPU is present; TTS_DEVICE=cpu to keep it on the CPU)")
        model, download = self.get("TTS_MODEL"), f"huggingface-cli download {DEFAULT_TTS_HUB_ID} --local-dir DIR"
        if model is not None:
            if self.probes.is_dir(model):
                if not self.probes.is_file(f"{model}/config.json"):
                    raise LaunchError(f"TTS_MODEL={model} is a folder without config.json: not a Qwen3-TTS checkpoint",
                                      f"point TTS_MODEL at a downloaded Qwen3-TTS-12Hz CustomVoice folder ({download})")
                source = f"checkpoint folder {model} (TTS_MODEL)"
                self.test_voice = self.probes.is_file(f"{model}/TINY_TEST_CHECKPOINT")
            elif model.startswith(("/", ".", "~")):
                raise LaunchError(f"TTS_MODEL={model}: no such checkpoint folder",
                                  f"download one ({download}) and set TTS_MODEL=DIR, or unset TTS_MODEL to run the "
                                  "tiny TEST voice")
            elif HUB_ID.fullmatch(model):
                found, hub = self.probes.hub(model)
                if not found:
                    raise LaunchError(f"TTS_MODEL={model} is no folder here, and as a hub id it cannot be loaded: {hub}",
                                      "give the checkpoint folder's path, or download the hub id where there is network "
                                      f"(huggingface-cli download {model} --local-dir DIR), copy DIR here and set "
                                      "TTS_MODEL=DIR")
                source = f"hub id {model} (TTS_MODEL; {hub})"
                self.agent_timeout_s = AGENT_DOWNLOAD_S if hub == "reachable" else AGENT_START_S
            else:
                raise LaunchError(f"TTS_MODEL={model} is neither an existing folder nor a hub id (owner/name)",
                                  f"set TTS_MODEL to a checkpoint folder or e.g. {DEFAULT_TTS_HUB_ID}")
        elif (weights := self.get("TTS_RANDOM_WEIGHTS")) is not None:
            source, self.test_voice = f"random weights {weights} (TTS_RANDOM_WEIGHTS)", True
        else:
            found, hub = self.probes.hub(DEFAULT_TTS_HUB_ID)
            if found:
                self.env["TTS_MODEL"] = DEFAULT_TTS_HUB_ID
                source = f"hub id {DEFAULT_TTS_HUB_ID} (TTS_MODEL unset; {hub})"
                self.agent_timeout_s = AGENT_DOWNLOAD_S if hub == "reachable" else AGENT_START_S
            else:
                tiny = self.env["TTS_MODEL"] = str(self.run_dir / "tiny-checkpoint")
                source = f"the tiny random-weight TEST checkpoint {tiny} (TTS_MODEL unset and {DEFAULT_TTS_HUB_ID} {hub})"
                self.test_voice = self.build_tiny = True  # built after the fail-fast checks: it takes seconds
        self.tts_source = source
        self.console.say(f"TTS: {source}")
        if self.test_voice:
            self.console.banner()

    # ---- the conversation ---------------------------------------------------------------------------

    def choose_end_of_turn(self) -> None:
        """The local Smart Turn model after a short pause (installed on first use by
        scripts/install_turn_model.sh, 8.7 MB from PyPI), else VAD silence alone."""
        mode, model = (self.get("AGENT_END_OF_TURN") or "").lower(), self.get("AGENT_TURN_MODEL")
        if mode != "vad" and model is None and not self.probes.install_turn_model():
            if mode == "smart_turn":
                raise LaunchError("AGENT_END_OF_TURN=smart_turn but the Smart Turn model could not be installed (above)",
                                  "make PyPI reachable and run bash scripts/install_turn_model.sh, or set "
                                  "AGENT_END_OF_TURN=vad")
            self.console.warn("the Smart Turn model could not be installed (above): turns end on VAD silence alone")
        if mode != "vad" and self.probes.nonempty_file(model or self.probes.turn_model_path()):
            self.console.say("end of turn: Smart Turn v3.2 (local) judges each pause of 0.2 s; AGENT_END_OF_TURN=vad "
                             "for VAD silence alone")
        else:
            self.console.say("end of turn: VAD silence (0.35 s)")

    def choose_reply_length(self) -> None:
        """The stand-ins' small LLM rambles, and the test voice speaks noise for ~0.4 s per character of
        a reply (up to the engine's frame cap): short replies, unless LLM_MAX_TOKENS is set."""
        if self.omni_source != "cpu-standins" or self.get("LLM_MAX_TOKENS") is not None:
            return
        if self.test_voice:
            self.env["LLM_MAX_TOKENS"] = "24"
            self.console.say("LLM_MAX_TOKENS=24: SmolLM2 rambles and the test voice speaks ~0.4 s per character; "
                             "short replies keep turns short")
        else:
            self.env["LLM_MAX_TOKENS"] = "60"
            self.console.say("LLM_MAX_TOKENS=60: SmolLM2 rambles; short replies keep turns short")

    def choose_request_timeout(self) -> None:
        """The stand-ins serve one STT and one LLM request at a time and queue the rest (omni_router.py),
        silently: with several sessions a request can wait longer than the agent's default of silence."""
        if self.omni_source == "cpu-standins" and self.get("OMNI_TIMEOUT_S") is None:
            self.env["OMNI_TIMEOUT_S"] = "90"
            self.console.say("OMNI_TIMEOUT_S=90: the stand-ins queue concurrent sessions' requests (one at a time each)")

    # ---- fail-fast checks ---------------------------------------------------------------------------

    def check_port(self, what: str, host: str, port: int, var: str) -> None:
        owner = self.probes.port_owner(host, port)
        if owner is not None:
            raise LaunchError(f"port {port} ({what}) is in use by {owner}",
                              f"stop that process, or give {what} another port: {var}=<free port> "
                              "scripts/start_all.sh start")

    def check_ports(self) -> None:
        s = self.settings
        self.check_port("the token server", self.token_host, self.token_port, "TOKEN_SERVER_PORT")
        if self.mode == "direct":
            self.check_port("the direct-mode agent", s.direct_host, s.direct_port, "DIRECT_PORT")
        else:
            self.check_port("the LiveKit worker's health and metrics server", s.agent_host, s.agent_health_port,
                            "AGENT_HEALTH_PORT")
        if self.start_livekit:
            self.check_port("the LiveKit server", s.livekit_bind, s.livekit_port, "LIVEKIT_PORT")
            self.check_port("the LiveKit server's WebRTC/TCP port (LIVEKIT_PORT+1)", s.livekit_bind, s.livekit_port + 1,
                            "LIVEKIT_PORT")
        if self.omni_source == "cpu-standins":
            self.check_port("the stand-ins' router", "127.0.0.1", s.omni_local_port, "OMNI_LOCAL_PORT")
            self.check_port("the Whisper server", "127.0.0.1", s.whisper_port, "WHISPER_PORT")
            self.check_port("the llama.cpp server", "127.0.0.1", s.llm_port, "LLM_PORT")
        elif self.omni_source == "vllm-omni":
            self.check_port("vLLM-Omni", "127.0.0.1", s.omni_local_port, "OMNI_LOCAL_PORT")
            self.omni_gpu.check_version()
            self.omni_gpu.split_estimated()

    def check_external_livekit(self) -> None:
        url = self.env["LIVEKIT_URL"]
        http_url = re.sub(r"^ws:", "http:", re.sub(r"^wss:", "https:", url))
        ok, answer = self.probes.http(http_url.removesuffix("/") + "/", 5)
        if not ok:
            raise LaunchError(f"the LiveKit server LIVEKIT_URL={url} is not reachable ({answer})",
                              "start it or fix LIVEKIT_URL; unset LIVEKIT_URL to use the project's own LiveKit server "
                              "(or direct mode: AGENT_TRANSPORT=direct)")

    def check_external_omni(self) -> None:
        base = self.env["OMNI_BASE_URL"]
        key = self.get("OMNI_API_KEY") or field_default(OmniConfig, "api_key")
        ok, answer = self.probes.http(base.removesuffix("/") + "/models", 5, key)
        if ok:
            self.console.say(f"Omni endpoint {base} answers (GET /models: {answer})")
        elif answer in ("HTTP 401", "HTTP 403"):
            raise LaunchError(f"the Omni endpoint OMNI_BASE_URL={base} refused our key (GET /models: {answer})",
                              "set OMNI_API_KEY to the server's API key")
        elif answer == "HTTP 404":
            self.console.warn(f"OMNI_BASE_URL={base} has no /models (HTTP 404): it answers, so going on; check the "
                              "URL ends in /v1")
        else:
            raise LaunchError(f"the Omni endpoint OMNI_BASE_URL={base} is not reachable (GET /models: {answer})",
                              "start the server there (e.g. vllm serve Qwen/Qwen3-Omni-30B-A3B-Instruct --omni "
                              "--deploy-config deploy/omni/qwen3_omni_thinker_only.yaml --port 8091: "
                              "docs/omni-on-one-gpu.md), fix the URL, or unset OMNI_BASE_URL to use the CPU stand-ins")

    def build_tiny_checkpoint(self) -> None:
        folder, log = self.run_dir / "tiny-checkpoint", self.run_dir / "logs" / "tiny-checkpoint.log"
        if self.probes.is_file(f"{folder}/TINY_TEST_CHECKPOINT") and self.probes.is_file(f"{folder}/config.json"):
            return
        self.console.say(f"building the tiny TEST checkpoint into {folder} (once, a few seconds)")
        if not self.probes.build_tiny_checkpoint(folder, log):
            raise LaunchError(f"building the tiny checkpoint failed (log above: {log})",
                              f"check that {ROOT / '.venv'} is complete (rm -rf {ROOT / '.venv'} and start again), "
                              "or set TTS_MODEL to a real checkpoint")

    # ---- the plan -----------------------------------------------------------------------------------

    def chosen(self) -> Chosen:
        s, direct = self.settings, self.mode == "direct"
        services: list[str] = []
        health: dict[str, str] = {}
        if self.start_livekit:
            services.append("livekit")
            health["livekit"] = f"http://{client_host(s.livekit_bind)}:{s.livekit_port}/"
        if self.omni_source == "vllm-omni":
            services.append("vllm_omni")
            health["vllm_omni"] = f"{self.env['OMNI_BASE_URL']}/models"
        elif self.omni_source == "cpu-standins":
            services += ["whisper", "llm", "omni_router"]
            health |= {"whisper": f"http://127.0.0.1:{s.whisper_port}/healthz",
                       "llm": f"http://127.0.0.1:{s.llm_port}/v1/models",
                       "omni_router": f"http://127.0.0.1:{s.omni_local_port}/healthz"}
        services += ["agent", "token_server"]
        agent_at = (f"{client_host(s.direct_host)}:{s.direct_port}" if direct
                    else f"{client_host(s.agent_host)}:{s.agent_health_port}")
        health |= {"agent": f"http://{agent_at}/healthz", "token_server": f"{self.page_url}/healthz"}
        key, secret, keys_from = self.keys
        items: list[tuple[str, str | list[str]]] = [
            ("MODE", self.mode), ("MODE_WHY", self.mode_why), ("OMNI_SOURCE", self.omni_source),
            ("OMNI_WHY", self.omni_why), ("OMNI_BASE_URL", self.env["OMNI_BASE_URL"]),
            ("TTS_SOURCE", self.tts_source), ("TTS_MODEL", self.get("TTS_MODEL") or ""),
            ("TTS_TEST_VOICE", "1" if self.test_voice else "0"), ("LIVEKIT_URL", self.get("LIVEKIT_URL") or ""),
            ("LIVEKIT_API_KEY", key), ("KEYS_FROM", keys_from)]
        if keys_from.startswith("generated"):
            items += [("GENERATED_API_KEY", key), ("GENERATED_API_SECRET", secret)]
        if (traces := self.get("AGENT_TRACES_DIR")) is not None:
            items.append(("AGENT_TRACES_DIR", traces))
        items += [("SERVICES", " ".join(services)), *((f"HEALTH_{name}", health[name]) for name in services),
                  ("EXTERNAL_OMNI", self.env["OMNI_BASE_URL"] if self.omni_source == "external" else ""),
                  ("PAGE_URL", self.page_url), ("AGENT_METRICS_URL", f"http://{agent_at}/metrics"),
                  # what start_all.sh launches
                  ("START_LIVEKIT", "1" if self.start_livekit else "0"), ("LIVEKIT_PORT", str(s.livekit_port)),
                  ("LIVEKIT_BIND", s.livekit_bind), ("OMNI_LOCAL_PORT", str(s.omni_local_port)),
                  ("WHISPER_PORT", str(s.whisper_port)), ("LLM_PORT", str(s.llm_port)),
                  ("AGENT_TIMEOUT_S", str(self.agent_timeout_s)), ("SERVICE_ENV", self.service_env())]
        if self.omni_source == "vllm-omni":
            items += [("VLLM_CMD", self.omni_gpu.command()), ("VLLM_TIMEOUT_S", str(self.omni_gpu.start_s))]
        return Chosen(items, self.test_voice)

    def service_env(self) -> list[str]:
        """The environment every Python service gets on top of the caller's (never the key pair: it is
        exported by start_all.sh, never on a command line)."""
        s = self.settings
        values = [f"OMNI_BASE_URL={self.env['OMNI_BASE_URL']}", f"TTS_MODEL={self.get('TTS_MODEL') or ''}",
                  f"TOKEN_SERVER_HOST={self.token_host}", f"TOKEN_SERVER_PORT={self.token_port}",
                  f"DIRECT_HOST={s.direct_host}", f"DIRECT_PORT={s.direct_port}",
                  f"DIRECT_ALLOWED_ORIGINS={self.allowed_origins}", f"AGENT_OFFER_URL={self.offer_url}",
                  "PYTHONUNBUFFERED=1"]
        return values + [f"{var}={value}" for var in PASSED_ON if (value := self.get(var)) is not None]
