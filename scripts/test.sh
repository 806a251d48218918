#!/usr/bin/env bash
# The README's test command. Creates the project-local .venv on first use, installs the
# project with its dev tools, then runs lint and the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv

# System tools the tests drive for real: espeak-ng + sox make test speech, chromium runs the
# browser tests. Installed from Debian when missing (CI runs as root).
missing=()
for tool in espeak-ng sox chromium; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test.sh] installing ${missing[*]} (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[test.sh] missing ${missing[*]}: install them (sudo apt-get install ${missing[*]}); tests that need them fail" >&2
  fi
fi
STAMP="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[test.sh] creating $VENV (first run installs torch and friends: a few minutes)"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "[test.sh] installing the project into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  "$VENV/bin/python" -m pip check
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
echo "[test.sh] ruff"
"$VENV/bin/ruff" check .
echo "[test.sh] mypy"
"$VENV/bin/mypy" tts_engine agent token_server
echo "[test.sh] pytest"
exec "$VENV/bin/python" -m pytest "$@"
