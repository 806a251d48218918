#!/usr/bin/env bash
# restart_on_exit.sh CODE -- COMMAND...
#
# Runs COMMAND and runs it again each time it exits with status CODE: how start_all.sh supervises
# the agent, which exits with 70 when its TTS engine thread has died (agent/observe/engine_watch.py) so
# that a fresh process reloads the engine. Any other exit status ends this script with it. More
# than MAX_RESTARTS (default 5) restarts within RESTART_WINDOW_S (default 600) gives up, so a
# broken device does not loop forever. A TERM to the process group (start_all.sh stop) stops both.
set -uo pipefail
[ $# -ge 3 ] && [ "$2" = "--" ] || { echo "usage: restart_on_exit.sh CODE -- COMMAND..." >&2; exit 2; }
code="$1"
shift 2
max="${MAX_RESTARTS:-5}"
window="${RESTART_WINDOW_S:-600}"
restarts=()
while :; do
  "$@"
  status=$?
  [ "$status" = "$code" ] || exit "$status"
  now=$SECONDS
  recent=()
  for t in ${restarts[@]+"${restarts[@]}"}; do [ $((now - t)) -lt "$window" ] && recent+=("$t"); done
  restarts=(${recent[@]+"${recent[@]}"} "$now")
  if [ "${#restarts[@]}" -gt "$max" ]; then
    echo "[restart_on_exit] $1 exited with $code ${#restarts[@]} times in ${window} s: giving up" >&2
    exit "$status"
  fi
  echo "[restart_on_exit] $(date -Is) $1 exited with $code: restarting it (${#restarts[@]} of $max in ${window} s)" >&2
  sleep "${RESTART_DELAY_S:-1}"
done
