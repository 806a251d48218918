#!/usr/bin/env bash
# Builds the environment deploy/omni/check_deploy_config.py runs in: the pinned vLLM-Omni
# (deploy/omni/requirements.txt) WITHOUT its dependencies - vLLM and CUDA torch are installs for the
# GPU machine - plus omegaconf, its YAML loader. Enough to load deploy configs with the release's own
# loader on a machine without a GPU, in seconds (an ~8 MB wheel and two small ones).
#
#   bash deploy/omni/check_venv.sh [VENV]      # default .venv-omni-check in the repository
#   VENV/bin/python deploy/omni/check_deploy_config.py deploy/omni/qwen3_omni_thinker_only.yaml
#
# A stamp file names what was installed: a second run costs nothing, a new pin installs again. The
# folder ignores itself for git (a .gitignore of '*' inside it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-omni-check}"
pin="$(sed -n 's/^vllm-omni==//p' "$here/requirements.txt")"
[ -n "$pin" ] || { echo "[omni-check] no vllm-omni==VERSION line in $here/requirements.txt" >&2; exit 1; }
# omegaconf and PyYAML: the versions a full `pip install -r deploy/omni/requirements.txt` resolves to
packages=("vllm-omni==$pin" "omegaconf==2.4.0" "PyYAML==6.0.4")
stamp="$venv/.installed-$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  echo "[omni-check] $venv exists and is not a virtual environment: remove it or name another folder" >&2
  exit 1
fi
python=""
for candidate in "$root/.venv/bin/python" python3.11 python3.12 python3; do
  if command -v "$candidate" > /dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] < (3, 14))' 2> /dev/null; then
    python="$candidate"
    break
  fi
done
[ -n "$python" ] || { echo "[omni-check] no Python 3.10-3.13 found (vLLM-Omni $pin needs one)" >&2; exit 1; }

echo "[omni-check] building $venv: ${packages[*]} (no dependencies)"
"$python" -m venv --clear "$venv"
printf '*\n' > "$venv/.gitignore"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${packages[@]}" || {
  echo "[omni-check] installing into $venv failed (pip's message above): check the network or PIP_INDEX_URL" >&2
  exit 1
}
touch "$stamp"
