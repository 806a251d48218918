#!/usr/bin/env bash
# The GPU run in one command, for a lent GPU machine that has torch but not this project's pins.
#
#   OUT=/some/dir bash scripts/gpu_suite.sh              # on the GPU machine, from the repo root
#   GPU_SUITE_SMOKE=1 PYTHON=/path/to/python3 OUT=/tmp/o bash scripts/gpu_suite.sh   # CPU dry run
#
# 1. installs the wheels carried in .whl/ (what the machine lacks or has in the wrong version:
#    qwen-tts 0.1.1, transformers 4.57.3 and the tokenizers / huggingface_hub it checks at import,
#    torchaudio, librosa and the rest of qwen-tts' import-time needs) into /tmp/site, ahead of the
#    machine's own packages on PYTHONPATH; no index, no network;
# 2. runs, each under its own timeout so a hang cannot eat the others' time:
#    gpu_check.py (0.6B, bf16, CUDA graphs, default context), bench_tts.py 0.6B, bench_tts.py 1.7B;
# 3. prints the check lines, the benchmark tables and a summary table (the caller sees only the
#    last 12,000 characters), and leaves at most 8 flat files in $OUT.
# A failing step does not stop the next one; the exit status is 1 if any step failed.
set -u -o pipefail

OUT=${OUT:?set OUT to the folder that receives logs and JSON}
PYTHON=${PYTHON:-python3}
SMOKE=${GPU_SUITE_SMOKE:-0}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# Per-step time limits (s): together with the install they stay under the run tool's 600 s.
if [ "$SMOKE" = 1 ]; then
  CHECK=(--random-weights tiny --device cpu --frames 6 --streams 2 --expect-eager)
  BENCH=(--device cpu --frames 6 --runs 1 --streams 1,2)
  SIZES=(tiny tiny)
else
  CHECK=(--random-weights 0.6b --device cuda)
  BENCH=(--device cuda --dtype bfloat16 --frames 48 --runs 3 --streams 1,4,16,32)
  SIZES=(0.6b 1.7b)
fi
LIMIT_CHECK=170 LIMIT_BENCH_SMALL=170 LIMIT_BENCH_LARGE=190

start=$SECONDS
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "ERROR: installing .whl/ failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
echo "installed $(ls .whl | wc -l) wheels into /tmp/site in $((SECONDS - start)) s"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu --format=csv
else
  echo "no nvidia-smi on this machine" | tee "$OUT/nvidia_smi.txt"
fi

declare -a NAMES RCS SECS
run_step() {  # name limit_s script args...: log to $OUT/name.log, remember rc and duration
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo; echo "=== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$PYTHON" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  NAMES+=("$name"); RCS+=("$rc"); SECS+=("$((SECONDS - t0))")
  local finished  # the line a step prints once its report is out: without it, show how it died
  if [ "$name" = gpu_check ]; then
    grep -E '^(python=|PASS|FAIL|SKIP|gpu_check:)' "$OUT/$name.log" | cut -c1-300
    finished='^gpu_check: '
  else
    sed -n '/^Qwen3-TTS engine benchmark/,$p' "$OUT/$name.log"
    finished='^results written to '
  fi
  if [ "$rc" != 0 ] && ! grep -qE "$finished" "$OUT/$name.log"; then
    echo "--- $name exited $rc$([ "$rc" = 124 ] && echo ' (timed out)'); last lines of its log:"
    tail -n 25 "$OUT/$name.log" | cut -c1-300
  fi
}

run_step gpu_check "$LIMIT_CHECK" scripts/gpu_check.py "${CHECK[@]}" --json "$OUT/gpu_check.json"
run_step bench_0b6 "$LIMIT_BENCH_SMALL" scripts/bench_tts.py --random-weights "${SIZES[0]}" "${BENCH[@]}" \
  --json "$OUT/bench_0b6.json"
run_step bench_1b7 "$LIMIT_BENCH_LARGE" scripts/bench_tts.py --random-weights "${SIZES[1]}" "${BENCH[@]}" \
  --json "$OUT/bench_1b7.json"

echo; echo "=== summary"
: > "$OUT/summary.txt"
failed=0
for i in "${!NAMES[@]}"; do
  [ "${RCS[$i]}" = 0 ] || failed=1
  printf '%-10s exit %-3s %4s s\n' "${NAMES[$i]}" "${RCS[$i]}" "${SECS[$i]}" >> "$OUT/summary.txt"
done
cat "$OUT/summary.txt"
"$PYTHON" scripts/gpu_suite_summary.py "$OUT" 2>&1 | tee -a "$OUT/summary.txt"
echo "suite: $((SECONDS - start)) s, exit $failed"
exit $failed
