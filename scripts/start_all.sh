#!/usr/bin/env bash
# The README's bring-up command: the whole system on this machine, in order, with health checks.
#
#   scripts/start_all.sh start | stop | restart | status | logs [service] | omni-plan
#
# start    creates .venv if missing (scripts/lib/ensure_venv.sh), chooses and prints the transport
#          (LiveKit or direct WebRTC), the STT+LLM backend (an Omni endpoint or the CPU stand-ins)
#          and the TTS checkpoint (a real Qwen3-TTS, or the tiny random-weight TEST voice), checks
#          every port first, starts each service in its own process group and waits for its health
#          check, then prints the URL to open. Idempotent: a healthy running system is left as is.
# stop     ends only the processes this script started (their process groups, from the pid files):
#          TERM, then KILL after STOP_TIMEOUT_S (10). Idempotent.
# status   each service: pid alive + health; exit 0 only if all are healthy.
# logs     follows run/logs/<service>.log (all of them without a service name).
# omni-plan  on a GPU machine: how start would split the GPU between the TTS engine and vLLM-Omni,
#          and the vLLM-Omni command, without starting anything (docs/omni-on-one-gpu.md).
#
# Run folder: $RUN_DIR (default run/ in the repo): pids/<service>.pid, logs/<service>.log,
# chosen.env (what was chosen and why, and a generated key pair; mode 0600), livekit/livekit.yaml.
# Settings: the README's environment variables (OMNI_*, TTS_*, LIVEKIT_*, AGENT_*, TOKEN_SERVER_PORT,
# DIRECT_PORT, ...) plus, for what this script starts: AGENT_TRANSPORT (auto | livekit | direct),
# OMNI_LOCAL_PORT (8091: vLLM-Omni or the stand-ins' router), WHISPER_PORT (8092), LLM_PORT (8093),
# LIVEKIT_PORT (7880, and the two above it), LIVEKIT_BIND (127.0.0.1) and LIVEKIT_NODE_IP (LAN use),
# START_TIMEOUT_S (overrides every health-check timeout), STOP_TIMEOUT_S (10); for vLLM-Omni on the
# GPU: OMNI_VENV (.venv-omni), OMNI_MAX_MODEL_LEN (8192), OMNI_GPU_MARGIN_GIB (2), OMNI_QUANTIZATION.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT/run}"
mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"  # relative to the caller's directory, like TTS_MODEL below
if [ -n "${TTS_MODEL:-}" ] && [ -d "$TTS_MODEL" ]; then
  TTS_MODEL="$(cd "$TTS_MODEL" && pwd)"
fi
cd "$ROOT"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
CHOSEN="$RUN_DIR/chosen.env"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PROBE="$ROOT/scripts/lib/probe.py"
BACKENDS="$ROOT/scripts/backends"
BACKENDS_VENV="${BACKENDS_VENV:-$ROOT/.venv-backends}"  # as scripts/backends/install.sh reads it
DEFAULT_TTS_HUB_ID="Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"
# vLLM-Omni on this GPU: its own venv (deploy/omni/requirements.txt), the thinker-only deploy config,
# and this run's overlay with the memory split (docs/omni-on-one-gpu.md)
OMNI_VENV="${OMNI_VENV:-$ROOT/.venv-omni}"
OMNI_SPLIT=(-m deploy.omni.gpu_split)
OMNI_DEPLOY="$RUN_DIR/omni-deploy.yaml"
# start order; stop goes backwards
SERVICE_ORDER=(livekit vllm_omni whisper llm omni_router agent token_server)
STOP_TIMEOUT_S="${STOP_TIMEOUT_S:-10}"

say() { printf '[start_all] %s\n' "$*"; }
warn() { printf '[start_all] WARNING: %s\n' "$*" >&2; }

# A start-time failure: what is missing and how to fix it; everything this run started is stopped.
fail() {
  printf '[start_all] ERROR: %s\n' "$1" >&2
  [ $# -ge 2 ] && printf '[start_all]   fix: %s\n' "$2" >&2
  exit 1
}

# ---- pid files and process groups ---------------------------------------------------------------

# The kernel's start time of a pid (field 22 of /proc/PID/stat, counted after the "(comm)" field,
# which may itself contain spaces): a recycled pid has another one.
proc_start_time() {
  local stat
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
  stat="${stat##*) }"
  # shellcheck disable=SC2086
  set -- $stat
  printf '%s' "${20}"
}

# Whether any live (non-zombie) process is in process group $1.
group_alive() {
  local pgid="$1" f stat rest
  for f in /proc/[0-9]*/stat; do
    { read -r stat < "$f"; } 2>/dev/null || continue  # a builtin: this loop runs often
    rest="${stat##*) }"
    # rest: state ppid pgrp ...
    # shellcheck disable=SC2086
    set -- $rest
    if [ "${3:-}" = "$pgid" ] && [ "$1" != "Z" ] && [ "$1" != "X" ]; then
      return 0
    fi
  done
  return 1
}

pid_file() { printf '%s/%s.pid' "$PID_DIR" "$1"; }

# Prints the recorded pid of a service if its process group is still ours and alive.
#   - leader alive with the recorded start time: ours;
#   - leader gone but its group still has members: ours (Linux never reuses a pid while a process
#     group of that id exists);
#   - leader alive with another start time: the pid was recycled, the group is not ours.
service_pid() {
  local file pid started now
  file="$(pid_file "$1")"
  [ -f "$file" ] || return 1
  read -r pid started < "$file" || true
  [[ "${pid:-}" =~ ^[0-9]+$ ]] || return 1
  if now="$(proc_start_time "$pid")"; then
    [ "$now" = "${started:-}" ] || return 1
    printf '%s' "$pid"
    return 0
  fi
  group_alive "$pid" || return 1
  printf '%s' "$pid"
}

# stop_service NAME: TERM the group, wait, KILL after STOP_TIMEOUT_S, remove the pid file.
stop_service() {
  local name="$1" pid waited=0
  local file
  file="$(pid_file "$name")"
  [ -f "$file" ] || return 0
  if pid="$(service_pid "$name")"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    while group_alive "$pid" && [ "$waited" -lt $((STOP_TIMEOUT_S * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if group_alive "$pid"; then
      warn "$name (process group $pid) ignored TERM for ${STOP_TIMEOUT_S} s: sending KILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      waited=0
      while group_alive "$pid" && [ "$waited" -lt 50 ]; do
        sleep 0.1
        waited=$((waited + 1))
      done
    fi
    if group_alive "$pid"; then
      warn "$name (process group $pid) is still there after KILL; pid file kept: run 'stop' again"
      return 1
    fi
    say "stopped $name (pid $pid)"
  else
    say "$name: not running (stale pid file removed)"
  fi
  rm -f "$file"
}

stop_all() {
  local i rc=0
  for ((i = ${#SERVICE_ORDER[@]} - 1; i >= 0; i--)); do
    stop_service "${SERVICE_ORDER[$i]}" || rc=1
  done
  return "$rc"
}

# ---- configuration memory -----------------------------------------------------------------------

# chosen_get NAME: a value from chosen.env (read in a subshell: nothing leaks into this one).
chosen_get() {
  [ -f "$CHOSEN" ] || return 1
  # shellcheck disable=SC1090
  (set +u; source "$CHOSEN"; v="${!1:-}"; [ -n "$v" ] && printf '%s' "$v")
}

chosen_set() { printf '%s=%q\n' "$1" "$2" >> "$CHOSEN.new"; }

# ---- probes ---------------------------------------------------------------------------------------

http_ok() { "$PY" "$PROBE" http "$@"; }

# check_port WHAT HOST PORT VAR: fail fast, naming the owner, when HOST:PORT cannot be bound.
check_port() {
  local what="$1" host="$2" port="$3" var="$4" owner fix
  if ! owner="$("$PY" "$PROBE" port "$host" "$port")"; then
    fix="stop that process, or give $what another port: $var=<free port> scripts/start_all.sh start"
    fail "port $port ($what) is in use by $owner" "$fix"
  fi
}

# ---- starting a service ---------------------------------------------------------------------------

STARTED_THIS_RUN=0

# launch NAME CMD...: in its own session and process group (setsid), output to its log.
launch() {
  local name="$1"
  shift
  local log="$LOG_DIR/$name.log"
  printf '\n===== %s: start_all starting %s =====\n' "$(date -Is)" "$name" >> "$log"
  # not a process-group leader here (no job control in a script), so setsid execs in place and
  # $! is the service's own pid = its process group id
  setsid "$@" >> "$log" 2>&1 < /dev/null &
  local pid=$!
  local started=""
  started="$(proc_start_time "$pid")" || true
  printf '%s %s\n' "$pid" "$started" > "$(pid_file "$name")"
  STARTED_THIS_RUN=1
  say "started $name (pid $pid), log $log"
}

# wait_healthy NAME TIMEOUT_S FIX: polls the service's URL in HEALTH (set by cmd_start, the one
# place each health URL is written; status reads the same URLs back from chosen.env).
wait_healthy() {
  local name="$1" url="${HEALTH[$1]}" timeout="${START_TIMEOUT_S:-$2}" fix="$3"
  local deadline=$((SECONDS + timeout)) last=""
  while :; do
    if ! service_pid "$name" > /dev/null; then
      printf '[start_all] ---- last lines of %s ----\n' "$LOG_DIR/$name.log" >&2
      tail -n 25 "$LOG_DIR/$name.log" >&2 || true
      fail "$name exited during start-up (log above: $LOG_DIR/$name.log)" "$fix"
    fi
    if last="$(http_ok "$url" --timeout 2)"; then
      say "$name is healthy ($url)"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '[start_all] ---- last lines of %s ----\n' "$LOG_DIR/$name.log" >&2
      tail -n 25 "$LOG_DIR/$name.log" >&2 || true
      fail "$name did not become healthy within ${timeout} s ($url: $last)" "$fix (or allow more time: START_TIMEOUT_S=600)"
    fi
    sleep 0.5
  done
}

# ---- the choices ----------------------------------------------------------------------------------

# A key pair for tokens (and for a LiveKit server started here): the caller's, else one generated
# earlier and kept in chosen.env (so a restart keeps pages' tokens valid), else a new one.
choose_key_pair() {
  if [ -n "${LIVEKIT_API_KEY:-}" ] && [ -n "${LIVEKIT_API_SECRET:-}" ]; then
    KEYS_FROM=environment
  elif [ -n "$(chosen_get GENERATED_API_KEY || true)" ]; then
    LIVEKIT_API_KEY="$(chosen_get GENERATED_API_KEY)"
    LIVEKIT_API_SECRET="$(chosen_get GENERATED_API_SECRET)"
    KEYS_FROM="generated earlier, reused from $CHOSEN"
  else
    LIVEKIT_API_KEY="key-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    LIVEKIT_API_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    KEYS_FROM="generated now, kept in $CHOSEN (mode 0600)"
  fi
}

# The project's LiveKit server (.tools/bin, from scripts/install_livekit.sh): installed now when Go
# is there and it is missing (minutes, once). Fails (returns 1, with a warning) when it cannot be.
local_livekit_server() {
  local bin
  bin="$(bash "$ROOT/scripts/install_livekit.sh" --path)"
  [ -x "$bin" ] && return 0
  if ! command -v go > /dev/null 2>&1; then
    LIVEKIT_MISSING_WHY="no LiveKit server at $bin and no Go to build it (scripts/install_livekit.sh says how to get one)"
    return 1
  fi
  say "installing the LiveKit server (scripts/install_livekit.sh -> $bin; the first build takes 3-5 minutes)"
  if ! bash "$ROOT/scripts/install_livekit.sh" 2>&1 | tee -a "$LOG_DIR/livekit-install.log" | sed 's/^/[start_all]   /'; then
    LIVEKIT_MISSING_WHY="building the LiveKit server failed (log: $LOG_DIR/livekit-install.log)"
    return 1
  fi
}

# AGENT_TRANSPORT=auto (default): an external LiveKit (LIVEKIT_URL), else the project's own LiveKit
# server started here, else direct WebRTC. livekit / direct: that one or an error.
choose_transport() {
  local want="${AGENT_TRANSPORT:-auto}"
  case "$want" in
    auto | livekit | direct) ;;
    *) fail "AGENT_TRANSPORT=$want is not a transport" "use auto (the default), livekit or direct" ;;
  esac
  if { [ -n "${LIVEKIT_API_KEY:-}" ] && [ -z "${LIVEKIT_API_SECRET:-}" ]; } ||
     { [ -z "${LIVEKIT_API_KEY:-}" ] && [ -n "${LIVEKIT_API_SECRET:-}" ]; }; then
    fail "only one of LIVEKIT_API_KEY / LIVEKIT_API_SECRET is set" \
         "set both (the pair tokens are signed and verified with), or neither to have one generated"
  fi
  START_LIVEKIT=0
  if [ -n "${LIVEKIT_URL:-}" ]; then
    [ "$want" = direct ] && fail "AGENT_TRANSPORT=direct but LIVEKIT_URL is set ($LIVEKIT_URL)" "unset one of them"
    if [ -z "${LIVEKIT_API_KEY:-}" ] || [ -z "${LIVEKIT_API_SECRET:-}" ]; then
      fail "LIVEKIT_URL is set ($LIVEKIT_URL) but LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not" \
           "export the key pair your LiveKit server verifies tokens with, or unset LIVEKIT_URL to use the project's own server (or direct mode)"
    fi
    MODE=livekit KEYS_FROM=environment
    MODE_WHY="LIVEKIT_URL is set ($LIVEKIT_URL): an external LiveKit deployment"
  elif [ "$want" != direct ] && local_livekit_server; then
    MODE=livekit START_LIVEKIT=1
    LIVEKIT_PORT="${LIVEKIT_PORT:-7880}" LIVEKIT_BIND="${LIVEKIT_BIND:-127.0.0.1}"
    if [ "$LIVEKIT_BIND" = 0.0.0.0 ] || [ "$LIVEKIT_BIND" = "::" ]; then
      [ -n "${LIVEKIT_NODE_IP:-}" ] || fail "LIVEKIT_BIND=$LIVEKIT_BIND needs LIVEKIT_NODE_IP" \
        "set LIVEKIT_NODE_IP to this machine's LAN address: the one browsers on other machines reach"
      LIVEKIT_URL="ws://$LIVEKIT_NODE_IP:$LIVEKIT_PORT"
    else
      LIVEKIT_URL="ws://$LIVEKIT_BIND:$LIVEKIT_PORT"
    fi
    choose_key_pair
    MODE_WHY="no LIVEKIT_URL: starting the project's LiveKit server at $LIVEKIT_URL ($(bash "$ROOT/scripts/install_livekit.sh" --version))"
  elif [ "$want" = livekit ]; then
    fail "AGENT_TRANSPORT=livekit but there is no LiveKit server: $LIVEKIT_MISSING_WHY" \
         "run bash scripts/install_livekit.sh (it says what it needs), set LIVEKIT_URL to a deployment, or use AGENT_TRANSPORT=direct"
  else
    MODE=direct
    if [ "$want" = direct ]; then
      MODE_WHY="AGENT_TRANSPORT=direct: the page talks WebRTC straight to the agent"
    else
      warn "LiveKit mode is not available: $LIVEKIT_MISSING_WHY"
      MODE_WHY="no LIVEKIT_URL and no LiveKit server here: the page talks WebRTC straight to the agent"
    fi
    choose_key_pair
  fi
  # exported, never on a command line: every service started below inherits the pair
  export LIVEKIT_API_KEY LIVEKIT_API_SECRET
  say "transport: $MODE - $MODE_WHY"
  say "token key pair: key $LIVEKIT_API_KEY, $KEYS_FROM"
}

gpu_present() { command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

# vLLM-Omni: $OMNI_VENV/bin/vllm, else `vllm` on PATH, whose interpreter can import vllm_omni.
# Sets VLLM_BIN and VLLM_PY.
vllm_omni_installed() {
  local vllm py
  if [ -x "$OMNI_VENV/bin/vllm" ]; then
    vllm="$OMNI_VENV/bin/vllm"
  else
    vllm="$(command -v vllm 2>/dev/null)" || return 1
  fi
  py="$(head -n 1 "$vllm" | sed -n 's/^#!\s*//p' | cut -d' ' -f1)"
  [ -x "$py" ] || return 1
  "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm_omni") is None)' 2>/dev/null || return 1
  VLLM_BIN="$vllm" VLLM_PY="$py"
}

choose_omni() {
  OMNI_LOCAL_PORT="${OMNI_LOCAL_PORT:-8091}"
  if [ -n "${OMNI_BASE_URL:-}" ]; then
    OMNI_SOURCE=external
    OMNI_WHY="OMNI_BASE_URL is set"
  elif gpu_present && vllm_omni_installed; then
    OMNI_SOURCE=vllm-omni
    OMNI_BASE_URL="http://127.0.0.1:$OMNI_LOCAL_PORT/v1"
    OMNI_WHY="vLLM-Omni is installed and a GPU is present: starting $(printf '%s' "${OMNI_MODEL:-Qwen/Qwen3-Omni-30B-A3B-Instruct}") on port $OMNI_LOCAL_PORT"
  else
    OMNI_SOURCE=cpu-standins
    OMNI_BASE_URL="http://127.0.0.1:$OMNI_LOCAL_PORT/v1"
    # what the stand-ins' router serves: Whisper base transcriptions, SmolLM2 via llama.cpp (plain
    # string content, no modalities field)
    OMNI_STT_STYLE=transcriptions OMNI_MODEL=smollm2-135m OMNI_STT_MODEL=whisper-base
    OMNI_PLAIN_STRING_CONTENT=1 OMNI_SEND_MODALITIES=0
    local why="no OMNI_BASE_URL"
    gpu_present || why="$why and no GPU"
    gpu_present && why="$why and vLLM-Omni is not installed"
    OMNI_WHY="$why: starting the CPU stand-ins (Whisper base + SmolLM2-135M behind one OpenAI-compatible router at $OMNI_BASE_URL)"
  fi
  say "STT + LLM: $OMNI_SOURCE - $OMNI_WHY"
}

check_external_omni() {
  local answer
  if answer="$(http_ok "${OMNI_BASE_URL%/}/models" --timeout 5 --bearer "${OMNI_API_KEY:-EMPTY}")"; then
    say "Omni endpoint $OMNI_BASE_URL answers (GET /models: $answer)"
    return 0
  fi
  case "$answer" in
    "HTTP 401" | "HTTP 403")
      fail "the Omni endpoint OMNI_BASE_URL=$OMNI_BASE_URL refused our key (GET /models: $answer)" \
           "set OMNI_API_KEY to the server's API key" ;;
    "HTTP 404")
      warn "OMNI_BASE_URL=$OMNI_BASE_URL has no /models (HTTP 404): it answers, so going on; check the URL ends in /v1" ;;
    *)
      fail "the Omni endpoint OMNI_BASE_URL=$OMNI_BASE_URL is not reachable (GET /models: $answer)" \
           "start the server there (e.g. vllm serve Qwen/Qwen3-Omni-30B-A3B-Instruct --omni --deploy-config deploy/omni/qwen3_omni_thinker_only.yaml --port 8091: docs/omni-on-one-gpu.md), fix the URL, or unset OMNI_BASE_URL to use the CPU stand-ins" ;;
  esac
}

# vLLM-Omni's release: the pin (deploy/omni/requirements.txt), another usable one (a warning), or one
# older than the thinker-only deploy config (an error).
check_vllm_omni_version() {
  local version line rc=0
  version="$("$VLLM_PY" -c 'import importlib.metadata as m; print(m.version("vllm-omni"))' 2>/dev/null)" || version=unknown
  line="$("$PY" "${OMNI_SPLIT[@]}" check-version "$version")" || rc=$?
  case "$rc" in
    0) say "$line ($VLLM_BIN)" ;;
    1) warn "$line ($VLLM_BIN)" ;;
    *) fail "$line ($VLLM_BIN)" \
            "install the pinned release next to it: $(dirname "$VLLM_BIN")/pip install -r deploy/omni/requirements.txt (docs/omni-on-one-gpu.md)" ;;
  esac
}

# omni_split ARGS...: deploy/omni/gpu_split.py plan with this run's settings; ARGS say how the TTS
# engine's share is known (estimated from its settings, or measured). Prints the split; fails with
# the helper's error and fix when the thinker cannot fit.
omni_split() {
  local out rc=0 line error
  out="$("$PY" "${OMNI_SPLIT[@]}" plan --model "${OMNI_MODEL:-Qwen/Qwen3-Omni-30B-A3B-Instruct}" \
         --max-model-len "${OMNI_MAX_MODEL_LEN:-8192}" --margin-gib "${OMNI_GPU_MARGIN_GIB:-2}" \
         ${OMNI_QUANTIZATION:+--quantization "$OMNI_QUANTIZATION"} "$@" 2>&1)" || rc=$?
  if [ "$rc" != 0 ]; then
    { grep -v '^error: \|^fix: ' <<< "$out" || true; } | sed 's/^/[start_all]   /' >&2
    error="$(sed -n 's/^error: //p' <<< "$out" | head -n 1)"
    fail "${error:-deploy/omni/gpu_split.py plan failed (exit status $rc, output above)}" \
         "$(sed -n 's/^fix: //p' <<< "$out" | head -n 1)"
  fi
  while IFS= read -r line; do
    case "$line" in
      gpu_memory_utilization=*) ;;  # for scripts; the line above it says the same
      *) say "  $line" ;;
    esac
  done <<< "$out"
}

# The TTS engine's share estimated from its settings (before it loads): start's fail-fast check, omni-plan.
omni_split_estimated() {
  say "GPU split for vLLM-Omni (the TTS engine's share estimated; start measures it):"
  omni_split --tts-device "${TTS_DEVICE:-cpu}" --tts-model "${TTS_MODEL:-}" \
    --tts-random-weights "${TTS_RANDOM_WEIGHTS:-}" --tts-dtype "${TTS_DTYPE:-bfloat16}" \
    --tts-max-streams "${TTS_MAX_STREAMS:-16}" "$@"
}

# The vLLM-Omni command line (VLLM_CMD). Its stage start-up includes downloading the checkpoint on a
# first run: its own timeouts (300 / 600 s by default) follow start_all's health-check wait.
vllm_omni_command() {
  local init_s="${START_TIMEOUT_S:-1800}"
  VLLM_CMD=("$VLLM_BIN" serve "${OMNI_MODEL:-Qwen/Qwen3-Omni-30B-A3B-Instruct}" --omni --deploy-config "$OMNI_DEPLOY"
            --host 127.0.0.1 --port "$OMNI_LOCAL_PORT" --stage-init-timeout "$init_s" --init-timeout "$init_s")
}

choose_tts() {
  TTS_TEST_VOICE=0 BUILD_TINY=0
  AGENT_TIMEOUT_S=300
  if [ -z "${TTS_DEVICE:-}" ] && gpu_present; then
    TTS_DEVICE=cuda
    say "TTS device: cuda (a GPU is present; TTS_DEVICE=cpu to keep it on the CPU)"
  fi
  if [ -n "${TTS_MODEL:-}" ]; then
    if [ -d "$TTS_MODEL" ]; then
      [ -f "$TTS_MODEL/config.json" ] || fail "TTS_MODEL=$TTS_MODEL is a folder without config.json: not a Qwen3-TTS checkpoint" \
        "point TTS_MODEL at a downloaded Qwen3-TTS-12Hz CustomVoice folder (huggingface-cli download $DEFAULT_TTS_HUB_ID --local-dir DIR)"
      TTS_SOURCE="checkpoint folder $TTS_MODEL (TTS_MODEL)"
      [ -f "$TTS_MODEL/TINY_TEST_CHECKPOINT" ] && TTS_TEST_VOICE=1
    elif [[ "$TTS_MODEL" == /* || "$TTS_MODEL" == .* || "$TTS_MODEL" == \~* ]]; then
      fail "TTS_MODEL=$TTS_MODEL: no such checkpoint folder" \
           "download one (huggingface-cli download $DEFAULT_TTS_HUB_ID --local-dir DIR) and set TTS_MODEL=DIR, or unset TTS_MODEL to run the tiny TEST voice"
    elif [[ "$TTS_MODEL" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
      local hub
      hub="$("$PY" "$PROBE" hub "$TTS_MODEL")" || fail "TTS_MODEL=$TTS_MODEL is no folder here, and as a hub id it cannot be loaded: $hub" \
        "give the checkpoint folder's path, or download the hub id where there is network (huggingface-cli download $TTS_MODEL --local-dir DIR), copy DIR here and set TTS_MODEL=DIR"
      TTS_SOURCE="hub id $TTS_MODEL (TTS_MODEL; $hub)"
      [ "$hub" = reachable ] && AGENT_TIMEOUT_S=1800  # the agent downloads it before it answers
    else
      fail "TTS_MODEL=$TTS_MODEL is neither an existing folder nor a hub id (owner/name)" \
           "set TTS_MODEL to a checkpoint folder or e.g. $DEFAULT_TTS_HUB_ID"
    fi
  elif [ -n "${TTS_RANDOM_WEIGHTS:-}" ]; then
    TTS_SOURCE="random weights $TTS_RANDOM_WEIGHTS (TTS_RANDOM_WEIGHTS)"
    TTS_TEST_VOICE=1
  else
    local hub
    if hub="$("$PY" "$PROBE" hub "$DEFAULT_TTS_HUB_ID")"; then
      TTS_MODEL="$DEFAULT_TTS_HUB_ID"
      TTS_SOURCE="hub id $TTS_MODEL (TTS_MODEL unset; $hub)"
      [ "$hub" = reachable ] && AGENT_TIMEOUT_S=1800
    else
      TTS_MODEL="$RUN_DIR/tiny-checkpoint"
      TTS_SOURCE="the tiny random-weight TEST checkpoint $TTS_MODEL (TTS_MODEL unset and $DEFAULT_TTS_HUB_ID $hub)"
      TTS_TEST_VOICE=1
      BUILD_TINY=1  # after the fail-fast checks: it takes seconds
    fi
  fi
  say "TTS: $TTS_SOURCE"
  if [ "$TTS_TEST_VOICE" = 1 ]; then
    test_voice_banner >&2
  fi
}

# Reply length for the stand-ins' small LLM, unless LLM_MAX_TOKENS is set: it rambles, and the test
# voice speaks noise for ~0.4 s per character of a reply (up to the engine's frame cap).
choose_reply_length() {
  [ "$OMNI_SOURCE" = cpu-standins ] && [ -z "${LLM_MAX_TOKENS:-}" ] || return 0
  if [ "$TTS_TEST_VOICE" = 1 ]; then
    LLM_MAX_TOKENS=24
    say "LLM_MAX_TOKENS=24: SmolLM2 rambles and the test voice speaks ~0.4 s per character; short replies keep turns short"
  else
    LLM_MAX_TOKENS=60
    say "LLM_MAX_TOKENS=60: SmolLM2 rambles; short replies keep turns short"
  fi
}

# The stand-ins serve one STT and one LLM request at a time and queue the rest (omni_router.py),
# silently: with several sessions a request can wait longer than the agent's default 15 s of
# silence. Unless OMNI_TIMEOUT_S is set, allow the wait.
choose_request_timeout() {
  [ "$OMNI_SOURCE" = cpu-standins ] && [ -z "${OMNI_TIMEOUT_S:-}" ] || return 0
  OMNI_TIMEOUT_S=90
  say "OMNI_TIMEOUT_S=90: the stand-ins queue concurrent sessions' requests (one at a time each)"
}

test_voice_banner() {
  cat <<EOF
[start_all] ############################################################################
[start_all] WARNING: the TTS voice is a RANDOM-WEIGHT TEST VOICE: it speaks noise, not words.
[start_all]   The page shows this warning too. For a real voice set TTS_MODEL to a Qwen3-TTS
[start_all]   checkpoint folder (huggingface-cli download $DEFAULT_TTS_HUB_ID --local-dir DIR).
[start_all] ############################################################################
EOF
}

build_tiny_checkpoint() {
  local dir="$RUN_DIR/tiny-checkpoint"
  if [ -f "$dir/TINY_TEST_CHECKPOINT" ] && [ -f "$dir/config.json" ]; then
    return 0
  fi
  say "building the tiny TEST checkpoint into $dir (once, a few seconds)"
  rm -rf "$dir.tmp"
  if ! "$PY" -m tts_engine.tiny_checkpoint "$dir.tmp" >> "$LOG_DIR/tiny-checkpoint.log" 2>&1; then
    tail -n 20 "$LOG_DIR/tiny-checkpoint.log" >&2 || true
    fail "building the tiny checkpoint failed (log above: $LOG_DIR/tiny-checkpoint.log)" \
         "check that $VENV is complete (rm -rf $VENV and start again), or set TTS_MODEL to a real checkpoint"
  fi
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
}

# ---- the services ---------------------------------------------------------------------------------

start_livekit() {
  local args=("$RUN_DIR/livekit" --port "$LIVEKIT_PORT" --bind "$LIVEKIT_BIND")
  [ -n "${LIVEKIT_NODE_IP:-}" ] && args+=(--node-ip "$LIVEKIT_NODE_IP")
  # the key pair travels in the environment into a 0600 config file (scripts/livekit_server.sh)
  launch livekit bash "$ROOT/scripts/livekit_server.sh" "${args[@]}"
  wait_healthy livekit 60 "see the log; another LiveKit may hold its ports ($LIVEKIT_PORT-$((LIVEKIT_PORT + 2))): LIVEKIT_PORT=<port>"
}

check_external_livekit() {
  local http_url="${LIVEKIT_URL/#ws:/http:}"
  http_url="${http_url/#wss:/https:}"
  local answer
  answer="$(http_ok "${http_url%/}/" --timeout 5)" || fail "the LiveKit server LIVEKIT_URL=$LIVEKIT_URL is not reachable ($answer)" \
    "start it or fix LIVEKIT_URL; unset LIVEKIT_URL to use the project's own LiveKit server (or direct mode: AGENT_TRANSPORT=direct)"
}

# The GPU is shared: the agent (TTS engine loaded, CUDA graphs captured) is up before this runs, what
# it took is measured (free memory before it loaded -> now), and vLLM-Omni gets the rest minus
# OMNI_GPU_MARGIN_GIB, written into the deploy overlay (docs/omni-on-one-gpu.md).
start_vllm_omni() {
  say "GPU split for vLLM-Omni (the TTS engine's share measured):"
  omni_split --tts-measured-from "$GPU_FREE_BEFORE_TTS" --overlay "$OMNI_DEPLOY"
  vllm_omni_command
  say "vLLM-Omni: ${VLLM_CMD[*]}"
  launch vllm_omni "${VLLM_CMD[@]}"
  wait_healthy vllm_omni 1800 "see the log: vLLM-Omni states its own figures there (Model loading took, Available KV cache memory); the split above is in $OMNI_DEPLOY (OMNI_GPU_MARGIN_GIB, OMNI_MAX_MODEL_LEN, OMNI_QUANTIZATION: docs/omni-on-one-gpu.md); the checkpoint must be downloadable or cached"
}

start_cpu_standins() {
  local missing=()
  for f in install.sh whisper_server.py run_llm.sh omni_router.py; do
    [ -f "$BACKENDS/$f" ] || missing+=("$f")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    fail "the CPU stand-ins are not in this checkout (missing scripts/backends/${missing[*]})" \
         "set OMNI_BASE_URL to a running Omni server (e.g. vLLM-Omni: http://HOST:8091/v1), or update the checkout"
  fi
  say "installing the CPU stand-ins if missing (scripts/backends/install.sh -> $BACKENDS_VENV; the first time builds llama.cpp: 5-8 minutes)"
  if ! bash "$BACKENDS/install.sh" >> "$LOG_DIR/backends-install.log" 2>&1; then
    tail -n 25 "$LOG_DIR/backends-install.log" >&2 || true
    fail "installing the CPU stand-ins failed (log above: $LOG_DIR/backends-install.log)" \
         "fix what the log names (network, a compiler: apt-get install build-essential cmake), or set OMNI_BASE_URL to an Omni server"
  fi
  local bpy="$BACKENDS_VENV/bin/python"
  launch whisper "$bpy" "$BACKENDS/whisper_server.py" --host 127.0.0.1 --port "$WHISPER_PORT"
  launch llm bash "$BACKENDS/run_llm.sh" --host 127.0.0.1 --port "$LLM_PORT"
  wait_healthy whisper 180 "see the log; rerun scripts/backends/install.sh"
  wait_healthy llm 180 "see the log; rerun scripts/backends/install.sh"
  launch omni_router "$bpy" "$BACKENDS/omni_router.py" --host 127.0.0.1 --port "$OMNI_LOCAL_PORT" \
    --stt "http://127.0.0.1:$WHISPER_PORT" --llm "http://127.0.0.1:$LLM_PORT"
  # the router's /healthz answers 200 only when both upstreams do
  wait_healthy omni_router 60 "see the log"
}

# The environment every Python service gets: the choices on top of the caller's environment.
service_env() {
  # LIVEKIT_API_KEY / LIVEKIT_API_SECRET are exported (choose_transport): never on a command line
  SERVICE_ENV=(
    "OMNI_BASE_URL=$OMNI_BASE_URL" "TTS_MODEL=${TTS_MODEL:-}"
    "TOKEN_SERVER_HOST=$TOKEN_SERVER_HOST" "TOKEN_SERVER_PORT=$TOKEN_SERVER_PORT"
    "DIRECT_HOST=$DIRECT_HOST" "DIRECT_PORT=$DIRECT_PORT"
    "DIRECT_ALLOWED_ORIGINS=$DIRECT_ALLOWED_ORIGINS" "AGENT_OFFER_URL=$AGENT_OFFER_URL"
    "PYTHONUNBUFFERED=1"
  )
  local var
  for var in OMNI_STT_STYLE OMNI_MODEL OMNI_STT_MODEL OMNI_PLAIN_STRING_CONTENT OMNI_SEND_MODALITIES \
             LLM_MAX_TOKENS OMNI_TIMEOUT_S TTS_DEVICE LIVEKIT_URL AGENT_HOST AGENT_HEALTH_PORT; do
    [ -n "${!var:-}" ] && SERVICE_ENV+=("$var=${!var}")
  done
  return 0
}

start_agent() {
  service_env
  [ "$TTS_TEST_VOICE" = 1 ] && test_voice_banner >> "$LOG_DIR/agent.log"
  local fix="see the log; OMNI_* and TTS_* are described in the README's configuration table"
  # exit status 70 = the engine thread died (agent/engine_watch.py): a fresh process reloads it
  local supervise=(bash "$ROOT/scripts/lib/restart_on_exit.sh" 70 --)
  if [ "$MODE" = direct ]; then
    launch agent "${supervise[@]}" env "${SERVICE_ENV[@]}" "$PY" -m agent.direct
    wait_healthy agent "$AGENT_TIMEOUT_S" "$fix"
  else
    launch agent "${supervise[@]}" env "${SERVICE_ENV[@]}" "$PY" -m agent start
    # the worker's /healthz answers 200 once its engine is loaded and it is registered
    wait_healthy agent "$AGENT_TIMEOUT_S" "$fix; the worker must reach LIVEKIT_URL=$LIVEKIT_URL"
  fi
}

start_token_server() {
  service_env
  launch token_server env "${SERVICE_ENV[@]}" "$PY" -m token_server
  wait_healthy token_server 60 \
    "see the log; TOKEN_SERVER_* and WEB_DIR are in the README's configuration table"
}

# An address clients on this machine use for a bind address.
client_host() { if [ "$1" = 0.0.0.0 ] || [ "$1" = "::" ]; then printf '127.0.0.1'; else printf '%s' "$1"; fi; }

write_chosen() {
  local old_umask
  old_umask="$(umask)"
  umask 077
  rm -f "$CHOSEN.new"
  printf '# written by scripts/start_all.sh start on %s; read by status, stop and scripts/soak.py\n' "$(date -Is)" > "$CHOSEN.new"
  chosen_set MODE "$MODE"
  chosen_set MODE_WHY "$MODE_WHY"
  chosen_set OMNI_SOURCE "$OMNI_SOURCE"
  chosen_set OMNI_WHY "$OMNI_WHY"
  chosen_set OMNI_BASE_URL "$OMNI_BASE_URL"
  chosen_set TTS_SOURCE "$TTS_SOURCE"
  chosen_set TTS_MODEL "${TTS_MODEL:-}"
  chosen_set TTS_TEST_VOICE "$TTS_TEST_VOICE"
  chosen_set LIVEKIT_URL "${LIVEKIT_URL:-}"
  chosen_set LIVEKIT_API_KEY "$LIVEKIT_API_KEY"
  chosen_set KEYS_FROM "$KEYS_FROM"
  if [[ "$KEYS_FROM" == generated* ]]; then
    chosen_set GENERATED_API_KEY "$LIVEKIT_API_KEY"
    chosen_set GENERATED_API_SECRET "$LIVEKIT_API_SECRET"
  fi
  chosen_set AGENT_TRACES_DIR "${AGENT_TRACES_DIR:-traces}"
  chosen_set SERVICES "${SERVICES[*]}"
  local name
  for name in "${SERVICES[@]}"; do
    chosen_set "HEALTH_$name" "${HEALTH[$name]}"
  done
  chosen_set EXTERNAL_OMNI "$([ "$OMNI_SOURCE" = external ] && printf '%s' "$OMNI_BASE_URL" || true)"
  chosen_set PAGE_URL "$PAGE_URL"
  chosen_set AGENT_METRICS_URL "$AGENT_METRICS_URL"
  mv "$CHOSEN.new" "$CHOSEN"
  umask "$old_umask"
}

# ---- subcommands ------------------------------------------------------------------------------------

# How the agent hears that a user's turn is over: the local Smart Turn model after a short pause
# (installed on first use by scripts/install_turn_model.sh, 8.7 MB from PyPI), else VAD silence alone.
choose_end_of_turn() {
  local mode="${AGENT_END_OF_TURN:-auto}"
  if [ "$mode" != vad ] && [ -z "${AGENT_TURN_MODEL:-}" ] &&
     ! bash "$ROOT/scripts/install_turn_model.sh" 2>&1 | sed 's/^/[start_all]   /'; then
    [ "$mode" = smart_turn ] && fail "AGENT_END_OF_TURN=smart_turn but the Smart Turn model could not be installed (above)" \
      "make PyPI reachable and run bash scripts/install_turn_model.sh, or set AGENT_END_OF_TURN=vad"
    warn "the Smart Turn model could not be installed (above): turns end on VAD silence alone"
  fi
  if [ "$mode" != vad ] && [ -s "${AGENT_TURN_MODEL:-$(bash "$ROOT/scripts/install_turn_model.sh" --path)}" ]; then
    say "end of turn: Smart Turn v3.2 (local) judges each pause of 0.2 s; AGENT_END_OF_TURN=vad for VAD silence alone"
  else
    say "end of turn: VAD silence (0.35 s)"
  fi
}

cmd_start() {
  mkdir -p "$PID_DIR" "$LOG_DIR"
  if all_healthy quiet; then
    say "already running and healthy (scripts/start_all.sh status for details; restart to apply changed settings)"
    say "open $(chosen_get PAGE_URL)"
    return 0
  fi
  if ls "$PID_DIR"/*.pid > /dev/null 2>&1; then
    say "a previous run is partly up or unhealthy: stopping it first"
    stop_all
  fi
  # from here on, a failure stops whatever this run started
  trap 'rc=$?; if [ "$rc" -ne 0 ] && [ "$STARTED_THIS_RUN" = 1 ]; then echo "[start_all] start failed: stopping what was started" >&2; stop_all >&2 || true; fi' EXIT

  ENSURE_VENV_TAG="[start_all]"
  # shellcheck source=scripts/lib/ensure_venv.sh
  source "$ROOT/scripts/lib/ensure_venv.sh"
  ensure_venv "$VENV" || fail "the Python environment $VENV is not usable (message above)" "fix what it names, then run start again"

  TOKEN_SERVER_HOST="${TOKEN_SERVER_HOST:-127.0.0.1}" TOKEN_SERVER_PORT="${TOKEN_SERVER_PORT:-8080}"
  DIRECT_HOST="${DIRECT_HOST:-127.0.0.1}" DIRECT_PORT="${DIRECT_PORT:-8081}"
  WHISPER_PORT="${WHISPER_PORT:-8092}" LLM_PORT="${LLM_PORT:-8093}"
  local page_host
  page_host="$(client_host "$TOKEN_SERVER_HOST")"
  PAGE_URL="http://$page_host:$TOKEN_SERVER_PORT"
  # the page is served by the token server; its origin must be allowed to send offers to the agent
  DIRECT_ALLOWED_ORIGINS="${DIRECT_ALLOWED_ORIGINS:-http://127.0.0.1:$TOKEN_SERVER_PORT,http://localhost:$TOKEN_SERVER_PORT}"
  if [ -z "${AGENT_OFFER_URL:-}" ] && [ "$DIRECT_HOST" != 127.0.0.1 ] && [ "$DIRECT_HOST" != localhost ]; then
    warn "DIRECT_HOST=$DIRECT_HOST but AGENT_OFFER_URL is unset: pages on other machines need" \
         "AGENT_OFFER_URL=http://<this machine's LAN address>:$DIRECT_PORT/api/offer (and DIRECT_ICE_HOSTS)"
  fi
  AGENT_OFFER_URL="${AGENT_OFFER_URL:-http://$(client_host "$DIRECT_HOST"):$DIRECT_PORT/api/offer}"

  choose_transport
  if [ "$MODE" = direct ]; then
    AGENT_METRICS_URL="http://$(client_host "$DIRECT_HOST"):$DIRECT_PORT/metrics"
  else
    AGENT_HEALTH_PORT="${AGENT_HEALTH_PORT:-8081}"
    AGENT_METRICS_URL="http://$(client_host "${AGENT_HOST:-127.0.0.1}"):$AGENT_HEALTH_PORT/metrics"
  fi
  choose_omni
  choose_tts
  choose_end_of_turn
  choose_reply_length
  choose_request_timeout
  # fail fast: every port this run needs, before anything starts
  check_port "the token server" "$TOKEN_SERVER_HOST" "$TOKEN_SERVER_PORT" TOKEN_SERVER_PORT
  if [ "$MODE" = direct ]; then
    check_port "the direct-mode agent" "$DIRECT_HOST" "$DIRECT_PORT" DIRECT_PORT
  else
    check_port "the LiveKit worker's health and metrics server" "${AGENT_HOST:-127.0.0.1}" "$AGENT_HEALTH_PORT" AGENT_HEALTH_PORT
  fi
  if [ "$START_LIVEKIT" = 1 ]; then
    check_port "the LiveKit server" "$LIVEKIT_BIND" "$LIVEKIT_PORT" LIVEKIT_PORT
    check_port "the LiveKit server's WebRTC/TCP port (LIVEKIT_PORT+1)" "$LIVEKIT_BIND" "$((LIVEKIT_PORT + 1))" LIVEKIT_PORT
  fi
  if [ "$OMNI_SOURCE" = cpu-standins ]; then
    check_port "the stand-ins' router" 127.0.0.1 "$OMNI_LOCAL_PORT" OMNI_LOCAL_PORT
    check_port "the Whisper server" 127.0.0.1 "$WHISPER_PORT" WHISPER_PORT
    check_port "the llama.cpp server" 127.0.0.1 "$LLM_PORT" LLM_PORT
  elif [ "$OMNI_SOURCE" = vllm-omni ]; then
    check_port "vLLM-Omni" 127.0.0.1 "$OMNI_LOCAL_PORT" OMNI_LOCAL_PORT
    check_vllm_omni_version
    omni_split_estimated
  fi
  [ "$MODE" = livekit ] && [ "$START_LIVEKIT" = 0 ] && check_external_livekit
  [ "$OMNI_SOURCE" = external ] && check_external_omni
  [ "$BUILD_TINY" = 1 ] && build_tiny_checkpoint

  SERVICES=() && declare -gA HEALTH=()
  if [ "$START_LIVEKIT" = 1 ]; then
    SERVICES+=(livekit) && HEALTH[livekit]="http://$(client_host "$LIVEKIT_BIND"):$LIVEKIT_PORT/"
  fi
  case "$OMNI_SOURCE" in
    vllm-omni) SERVICES+=(vllm_omni) && HEALTH[vllm_omni]="$OMNI_BASE_URL/models" ;;
    cpu-standins)
      SERVICES+=(whisper llm omni_router)
      HEALTH[whisper]="http://127.0.0.1:$WHISPER_PORT/healthz"
      HEALTH[llm]="http://127.0.0.1:$LLM_PORT/v1/models"
      HEALTH[omni_router]="http://127.0.0.1:$OMNI_LOCAL_PORT/healthz" ;;
  esac
  SERVICES+=(agent token_server)
  if [ "$MODE" = direct ]; then
    HEALTH[agent]="http://$(client_host "$DIRECT_HOST"):$DIRECT_PORT/healthz"
  else
    HEALTH[agent]="http://$(client_host "${AGENT_HOST:-127.0.0.1}"):$AGENT_HEALTH_PORT/healthz"
  fi
  HEALTH[token_server]="$PAGE_URL/healthz"
  write_chosen

  [ "$START_LIVEKIT" = 1 ] && start_livekit
  [ "$OMNI_SOURCE" = cpu-standins ] && start_cpu_standins
  # vLLM-Omni after the agent: it gets what the TTS engine leaves of the GPU (start_vllm_omni)
  if [ "$OMNI_SOURCE" = vllm-omni ]; then
    GPU_FREE_BEFORE_TTS="$("$PY" "${OMNI_SPLIT[@]}" free-mib)" || fail "could not read the GPU's free memory: $GPU_FREE_BEFORE_TTS" "check that nvidia-smi works"
  fi
  start_agent
  [ "$OMNI_SOURCE" = vllm-omni ] && start_vllm_omni
  start_token_server
  trap - EXIT
  say "all services are up: ${SERVICES[*]} (pids and logs in $RUN_DIR; Prometheus metrics: $AGENT_METRICS_URL)"
  [ "$TTS_TEST_VOICE" = 1 ] && warn "the voice is the random-weight TEST voice (see above)"
  say "open $PAGE_URL"
}

# all_healthy [quiet]: status of every service chosen by the last start; 0 only if all are healthy.
all_healthy() {
  local quiet="${1:-}" services name pid url answer rc=0
  services="$(chosen_get SERVICES)" || { [ -n "$quiet" ] || say "not started (no $CHOSEN)"; return 1; }
  [ -x "$PY" ] || { [ -n "$quiet" ] || say "not started ($VENV missing)"; return 1; }
  for name in $services; do
    url="$(chosen_get "HEALTH_$name")"
    if ! pid="$(service_pid "$name")"; then
      [ -n "$quiet" ] || printf '%-14s %-8s %-10s %s\n' "$name" "-" "stopped" "$url"
      rc=1
      continue
    fi
    if answer="$(http_ok "$url" --timeout 3)"; then
      [ -n "$quiet" ] || printf '%-14s %-8s %-10s %s\n' "$name" "$pid" "healthy" "$url"
    else
      [ -n "$quiet" ] || printf '%-14s %-8s %-10s %s (%s)\n' "$name" "$pid" "UNHEALTHY" "$url" "$answer"
      rc=1
    fi
  done
  local omni
  omni="$(chosen_get EXTERNAL_OMNI || true)"
  if [ -n "$omni" ]; then
    if answer="$(http_ok "${omni%/}/models" --timeout 3 --bearer "${OMNI_API_KEY:-EMPTY}")"; then
      [ -n "$quiet" ] || printf '%-14s %-8s %-10s %s\n' "omni (ext.)" "-" "reachable" "$omni"
    else
      [ -n "$quiet" ] || printf '%-14s %-8s %-10s %s (%s)\n' "omni (ext.)" "-" "UNREACHABLE" "$omni" "$answer"
      rc=1
    fi
  fi
  return "$rc"
}

cmd_status() {
  printf '%-14s %-8s %-10s %s\n' SERVICE PID STATE HEALTH
  local rc=0
  all_healthy || rc=1
  if [ -f "$CHOSEN" ]; then
    say "mode $(chosen_get MODE); STT+LLM $(chosen_get OMNI_SOURCE); TTS $(chosen_get TTS_SOURCE)"
    [ "$(chosen_get TTS_TEST_VOICE || true)" = 1 ] && warn "the voice is the random-weight TEST voice"
    [ "$rc" = 0 ] && say "all healthy: open $(chosen_get PAGE_URL)"
  fi
  return "$rc"
}

cmd_logs() {
  if [ $# -ge 1 ]; then
    [ -f "$LOG_DIR/$1.log" ] || fail "no log for service '$1' in $LOG_DIR" \
      "one of: $(cd "$LOG_DIR" 2>/dev/null && ls -- *.log 2>/dev/null | sed 's/\.log$//' | tr '\n' ' ')"
    exec tail -n 100 -F "$LOG_DIR/$1.log"
  fi
  ls "$LOG_DIR"/*.log > /dev/null 2>&1 || fail "no logs in $LOG_DIR yet" "scripts/start_all.sh start"
  exec tail -n 20 -F "$LOG_DIR"/*.log
}

# omni-plan: on the GPU machine, what start would give vLLM-Omni and the command it would run; starts
# nothing (the TTS engine's share estimated from TTS_*, where start measures it).
cmd_omni_plan() {
  [ -x "$PY" ] || fail "no $VENV to run deploy/omni/gpu_split.py with" "scripts/start_all.sh start (or scripts/test.sh) creates it"
  gpu_present || fail "no GPU here (nvidia-smi lists none): start would use OMNI_BASE_URL or the CPU stand-ins" \
    "run omni-plan on the GPU machine"
  OMNI_LOCAL_PORT="${OMNI_LOCAL_PORT:-8091}"
  if vllm_omni_installed; then
    check_vllm_omni_version
  else
    warn "vLLM-Omni is not installed ($OMNI_VENV/bin/vllm, or vllm on PATH): python3.12 -m venv $OMNI_VENV && $OMNI_VENV/bin/pip install -r deploy/omni/requirements.txt"
    VLLM_BIN=vllm
  fi
  [ -n "${TTS_DEVICE:-}" ] || TTS_DEVICE=cuda
  [ -n "${TTS_MODEL:-}${TTS_RANDOM_WEIGHTS:-}" ] || TTS_MODEL="$DEFAULT_TTS_HUB_ID"
  omni_split_estimated --overlay -
  vllm_omni_command
  say "start would run (after the agent, with $OMNI_DEPLOY holding the measured split):"
  say "  ${VLLM_CMD[*]}"
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    start) cmd_start ;;
    stop) stop_all && say "stopped (nothing of this run is left)" ;;
    restart) stop_all && cmd_start ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    omni-plan) cmd_omni_plan ;;
    *)
      echo "usage: scripts/start_all.sh start|stop|restart|status|logs [service]|omni-plan" >&2
      exit 2 ;;
  esac
}

main "$@"
