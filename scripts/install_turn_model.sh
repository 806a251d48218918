#!/usr/bin/env bash
# Installs the local end-of-turn model the agent's adaptive endpointing uses (agent/session/turn_end.py):
# Smart Turn v3.2 (CPU ONNX, 8.7 MB, BSD-2-Clause, by Daily), which ships inside the pipecat-ai wheel
# on PyPI. Only the model file is taken from the wheel (pip download, no install: pipecat-ai's own
# pins would clash with this project's); it lands in .tools/smart-turn/. Run by scripts/test.sh and
# scripts/start_all.sh; a second run finds it and costs nothing.
#
#   bash scripts/install_turn_model.sh          # install (or confirm)
#   bash scripts/install_turn_model.sh --path   # print where the model goes, install nothing
set -euo pipefail

PIPECAT_VERSION=1.14.0  # the one place the wheel carrying the model is pinned
MODEL_IN_WHEEL=pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
MODEL="$TOOLS_DIR/smart-turn/$(basename "$MODEL_IN_WHEEL")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
tag="[install_turn_model]"

case "${1:-}" in
  --path) printf '%s\n' "$MODEL"; exit 0 ;;
  "") ;;
  *) echo "usage: bash scripts/install_turn_model.sh [--path]" >&2; exit 2 ;;
esac

if [ -s "$MODEL" ]; then
  echo "$tag Smart Turn v3.2 is installed ($MODEL)"
  exit 0
fi
[ -x "$PY" ] || PY=python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "$tag downloading pipecat-ai==$PIPECAT_VERSION (12 MB, no dependencies) for its Smart Turn model"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "pipecat-ai==$PIPECAT_VERSION" || {
  echo "$tag could not download pipecat-ai==$PIPECAT_VERSION from the package index: the agent falls back to" \
       "VAD-only endpointing (AGENT_END_OF_TURN=vad); rerun this script when PyPI is reachable" >&2
  exit 1
}
mkdir -p "$(dirname "$MODEL")"
"$PY" - "$tmp"/pipecat_ai-*.whl "$MODEL_IN_WHEEL" "$MODEL.part" <<'PYEOF'
import base64, csv, hashlib, io, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read(member)
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    rows = {row[0]: row[1] for row in csv.reader(io.TextIOWrapper(z.open(record), "utf-8")) if len(row) > 1}
algo, _, expected = rows[member].partition("=")
digest = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
if digest != expected:
    sys.exit(f"{member}: {algo} {digest} does not match the wheel's RECORD ({expected})")
open(out, "wb").write(data)
PYEOF
mv "$MODEL.part" "$MODEL"
echo "$tag installed Smart Turn v3.2 at $MODEL"
