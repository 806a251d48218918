#!/usr/bin/env bash
# Runs llama.cpp's OpenAI-compatible server (llama-cpp-python) with SmolLM2-135M-Instruct on the CPU:
# the LLM stand-in for the Omni server. Needs scripts/backends/install.sh first.
#
#   scripts/backends/run_llm.sh [--host 127.0.0.1] [--port 8093] [--model GGUF] [--threads 2]
#                               [--n-ctx 2048] [-- extra llama_cpp.server flags]
#
# The exact command it execs (so stop signals reach the server itself):
#   .venv-backends/bin/python -m llama_cpp.server --model .venv-backends/models/smollm2-135m-instruct.gguf \
#     --model_alias smollm2-135m --host 127.0.0.1 --port 8093 --n_ctx 2048 --n_threads 2 \
#     --interrupt_requests False
# Serves /v1/chat/completions, /v1/completions, /v1/models (no /health: check /v1/models).
# One request at a time; --interrupt_requests False makes a second one wait instead of cutting the
# running stream short (llama-cpp-python's default), so two sessions never truncate each other.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${BACKENDS_VENV:-$ROOT/.venv-backends}"
HOST="127.0.0.1"
PORT="8093"
MODEL="$VENV/models/smollm2-135m-instruct.gguf"
THREADS="2"
N_CTX="2048"
EXTRA=()

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need_value() { [ $# -ge 2 ] || { echo "[run_llm] ERROR: $1 needs a value" >&2; exit 2; }; }

while [ $# -gt 0 ]; do
  case "$1" in
    --host) need_value "$@"; HOST="$2"; shift 2 ;;
    --port) need_value "$@"; PORT="$2"; shift 2 ;;
    --model) need_value "$@"; MODEL="$2"; shift 2 ;;
    --threads) need_value "$@"; THREADS="$2"; shift 2 ;;
    --n-ctx) need_value "$@"; N_CTX="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "[run_llm] ERROR: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$VENV/bin/python" ]; then
  echo "[run_llm] ERROR: $VENV is missing: run scripts/backends/install.sh first" >&2
  exit 1
fi
if [ ! -f "$MODEL" ]; then
  echo "[run_llm] ERROR: no model at $MODEL: run scripts/backends/install.sh (or pass --model FILE.gguf)" >&2
  exit 1
fi

echo "[run_llm] SmolLM2-135M (llama.cpp) on http://$HOST:$PORT/v1 (model alias smollm2-135m, $THREADS threads, n_ctx $N_CTX)"
exec "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias smollm2-135m \
  --host "$HOST" --port "$PORT" --n_ctx "$N_CTX" --n_threads "$THREADS" --interrupt_requests False \
  ${EXTRA[@]+"${EXTRA[@]}"}
