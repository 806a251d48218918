#!/usr/bin/env bash
# The README's bring-up command: the whole system on this machine, in order, with health checks.
#
#   scripts/start_all.sh start | stop | restart | status | logs [service] | omni-plan
#
# start    creates .venv if missing (scripts/lib/ensure_venv.sh); the planner (python -m agent.launch
#          plan, unit-tested in tests/test_launch_plan.py) chooses and prints the transport (LiveKit
#          or direct WebRTC), the STT+LLM backend (an Omni endpoint or the CPU stand-ins), the TTS
#          checkpoint (a real Qwen3-TTS, or the tiny random-weight TEST voice), end of turn, reply
#          length and timeouts, checks every port and endpoint, and writes chosen.env; then this
#          script starts each service in its own process group and waits for its health check, and
#          prints the URL to open. Idempotent: a healthy running system is left as is.
# stop     ends only the processes this script started (their process groups, from the pid files):
#          TERM, then KILL after STOP_TIMEOUT_S (10). Idempotent.
# status   each service: pid alive + health; exit 0 only if all are healthy.
# logs     follows run/logs/<service>.log (all of them without a service name).
# omni-plan  on a GPU machine: how start would split the GPU between the TTS engine and vLLM-Omni,
#          and the vLLM-Omni command, without starting anything (python -m agent.launch omni-plan;
#          docs/omni-on-one-gpu.md).
#
# Run folder: $RUN_DIR (default run/ in the repo): pids/<service>.pid, logs/<service>.log,
# chosen.env (what was chosen and why, what is launched, a generated key pair; mode 0600),
# livekit/livekit.yaml. Settings: the README's two configuration tables (their defaults live in the
# dataclasses that read them: agent/launch/settings.py for this script's own, e.g. AGENT_TRANSPORT,
# the ports of what it starts, OMNI_VENV); this file reads RUN_DIR, BACKENDS_VENV, START_TIMEOUT_S
# (overrides every health-check wait) and STOP_TIMEOUT_S itself.
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
PLANNER=(-m agent.launch)  # the choices and the fail-fast checks (agent/launch/)
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

# ---- probes ---------------------------------------------------------------------------------------

http_ok() { "$PY" "$PROBE" http "$@"; }

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

# wait_healthy NAME TIMEOUT_S FIX: polls the service's URL, HEALTH_<NAME> in chosen.env (the planner
# writes each health URL once; status reads the same URLs back).
wait_healthy() {
  local url_var="HEALTH_$1"
  local name="$1" url="${!url_var}" timeout="${START_TIMEOUT_S:-$2}" fix="$3"
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

# ---- the services ---------------------------------------------------------------------------------

start_livekit() {
  local args=("$RUN_DIR/livekit" --port "$LIVEKIT_PORT" --bind "$LIVEKIT_BIND")
  [ -n "${LIVEKIT_NODE_IP:-}" ] && args+=(--node-ip "$LIVEKIT_NODE_IP")
  # the key pair travels in the environment into a 0600 config file (scripts/livekit_server.sh)
  launch livekit bash "$ROOT/scripts/livekit_server.sh" "${args[@]}"
  wait_healthy livekit 60 "see the log; another LiveKit may hold its ports ($LIVEKIT_PORT-$((LIVEKIT_PORT + 2))): LIVEKIT_PORT=<port>"
}

# The GPU is shared: the agent (TTS engine loaded, CUDA graphs captured) is up before this runs, what
# it took is measured (free memory before it loaded -> now), and vLLM-Omni gets the rest minus
# OMNI_GPU_MARGIN_GIB, written into the deploy overlay (docs/omni-on-one-gpu.md).
start_vllm_omni() {
  "$PY" "${PLANNER[@]}" omni-split --run-dir "$RUN_DIR" --tts-measured-from "$GPU_FREE_BEFORE_TTS" || exit 1
  say "vLLM-Omni: ${VLLM_CMD[*]}"
  launch vllm_omni "${VLLM_CMD[@]}"
  wait_healthy vllm_omni "$VLLM_TIMEOUT_S" "see the log: vLLM-Omni states its own figures there (Model loading took, Available KV cache memory); the split above is in $RUN_DIR/omni-deploy.yaml (OMNI_GPU_MARGIN_GIB, OMNI_MAX_MODEL_LEN, OMNI_QUANTIZATION: docs/omni-on-one-gpu.md); the checkpoint must be downloadable or cached"
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

# Every Python service gets SERVICE_ENV (chosen.env: the choices) on top of the caller's environment;
# LIVEKIT_API_KEY / LIVEKIT_API_SECRET are exported (cmd_start), never on a command line.
start_agent() {
  local fix="see the log; OMNI_* and TTS_* are described in the README's configuration table"
  # exit status 70 = the engine thread died (agent/observe/engine_watch.py): a fresh process reloads it
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
  launch token_server env "${SERVICE_ENV[@]}" "$PY" -m token_server
  wait_healthy token_server 60 \
    "see the log; TOKEN_SERVER_* and WEB_DIR are in the README's configuration table"
}

# ---- subcommands ------------------------------------------------------------------------------------

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

  # every choice and fail-fast check (ERROR and fix printed there), then chosen.env: what to launch
  "$PY" "${PLANNER[@]}" plan --run-dir "$RUN_DIR" || exit 1
  # shellcheck disable=SC1090
  source "$CHOSEN"
  [ -z "${GENERATED_API_SECRET:-}" ] || LIVEKIT_API_SECRET="$GENERATED_API_SECRET"
  # exported, never on a command line: every service started below inherits the pair
  export LIVEKIT_API_KEY LIVEKIT_API_SECRET

  [ "$START_LIVEKIT" = 1 ] && start_livekit
  [ "$OMNI_SOURCE" = cpu-standins ] && start_cpu_standins
  # vLLM-Omni after the agent: it gets what the TTS engine leaves of the GPU (start_vllm_omni)
  if [ "$OMNI_SOURCE" = vllm-omni ]; then
    GPU_FREE_BEFORE_TTS="$("$PY" -m deploy.omni.gpu_split free-mib)" || fail "could not read the GPU's free memory: $GPU_FREE_BEFORE_TTS" "check that nvidia-smi works"
  fi
  start_agent
  [ "$OMNI_SOURCE" = vllm-omni ] && start_vllm_omni
  start_token_server
  trap - EXIT
  say "all services are up: $SERVICES (pids and logs in $RUN_DIR; Prometheus metrics: $AGENT_METRICS_URL)"
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
    if answer="$(http_ok "${omni%/}/models" --timeout 3 ${OMNI_API_KEY:+--bearer "$OMNI_API_KEY"})"; then
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
  "$PY" "${PLANNER[@]}" omni-plan --run-dir "$RUN_DIR"
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
