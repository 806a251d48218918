# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/start_all.sh (not run on its own): the ONE place that
# creates the project-local virtual environment and installs the project into it.
#
#   source scripts/lib/ensure_venv.sh
#   ensure_venv .venv dev      # test.sh: the project + its dev tools (pytest, ruff, mypy, playwright)
#   ensure_venv .venv          # start_all.sh: the project only (enough to run every service)
#
# Run it from the repository root. A stamp file named after the hash of pyproject.toml records a
# finished install, so later calls cost nothing; an edited pyproject.toml installs again. The
# stamp of the dev install is `.installed-<hash>` (the name test.sh always used, so existing
# environments stay valid) and also covers the plain install (`.installed-<hash>-runtime`).
# Messages are prefixed with $ENSURE_VENV_TAG (default "[venv]"); failures return non-zero with
# what is missing and how to fix it.

ensure_venv() {
  local venv="$1" extras="${2:-}"
  local tag="${ENSURE_VENV_TAG:-[venv]}"
  local hash target stamp
  hash="$(sha256sum pyproject.toml | cut -c1-16)"
  if [ -n "$extras" ]; then
    target=".[$extras]"
    stamp="$venv/.installed-$hash"
  else
    target="."
    stamp="$venv/.installed-$hash-runtime"
  fi
  if [ -f "$venv/.installed-$hash" ] || [ -f "$stamp" ]; then
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    local py
    py="$(_ensure_venv_python)" || {
      echo "$tag Python 3.11 not found (the project requires >=3.11,<3.12): install it, e.g." \
           "'sudo apt-get install python3.11 python3.11-venv', or put a python3.11 on PATH" >&2
      return 1
    }
    echo "$tag creating $venv with $py (first run installs torch and friends: a few minutes)"
    "$py" -m venv "$venv" || {
      echo "$tag could not create $venv: install the venv module ('sudo apt-get install python3.11-venv')" >&2
      return 1
    }
  fi
  echo "$tag installing the project ($target) into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip &&
    "$venv/bin/python" -m pip install -q -e "$target" &&
    "$venv/bin/python" -m pip check || {
      echo "$tag installing into $venv failed (see pip's message above): check the network or the" \
           "package index (PIP_INDEX_URL), then run the command again; 'rm -rf $venv' starts over" >&2
      return 1
    }
  # stamps of an older pyproject.toml no longer say anything
  find "$venv" -maxdepth 1 -name '.installed-*' ! -name ".installed-$hash*" -delete
  touch "$stamp"
}

# The interpreter to build the venv with: python3.11 by name, else a python3 that is 3.11.
_ensure_venv_python() {
  local candidate
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}
