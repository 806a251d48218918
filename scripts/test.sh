#!/usr/bin/env bash
# The README's test command. Creates the project-local .venv on first use, installs the
# project with its dev tools and the LiveKit server (.tools/), then runs lint and the test suite.
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv

# System tools the tests drive for real: espeak-ng + sox make test speech, chromium runs the
# browser tests, g++ + cmake build llama.cpp for the CPU stand-ins (scripts/backends/install.sh).
# Installed from Debian when missing (CI runs as root); each tool's package has the tool's name.
missing=()
for tool in espeak-ng sox chromium g++ cmake; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test.sh] installing ${missing[*]} (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[test.sh] missing ${missing[*]}: install them (sudo apt-get install ${missing[*]}); tests that need them fail" >&2
  fi
fi
ENSURE_VENV_TAG="[test.sh]"
# shellcheck source=scripts/lib/ensure_venv.sh
source scripts/lib/ensure_venv.sh
ensure_venv "$VENV" dev
# The real LiveKit server the LiveKit-mode tests run against (.tools/bin; a no-op once installed).
# Without it those tests fail, each with the installer's message; the rest still run.
bash scripts/install_livekit.sh || echo "[test.sh] the LiveKit server could not be installed (above): LiveKit tests will fail" >&2
# The agent's local end-of-turn model (.tools/smart-turn; the turn-model tests need it)
bash scripts/install_turn_model.sh || echo "[test.sh] the Smart Turn model could not be installed (above): its tests will fail" >&2
echo "[test.sh] ruff"
"$VENV/bin/ruff" check .
echo "[test.sh] mypy"
"$VENV/bin/mypy" tts_engine agent token_server testing speech_api
echo "[test.sh] pytest"
exec "$VENV/bin/python" -m pytest "$@"
