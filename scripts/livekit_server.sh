#!/usr/bin/env bash
# Runs the project's LiveKit server (scripts/install_livekit.sh installs it) with a generated config
# file: the key pair comes from the environment and goes into that file (mode 0600), never onto a
# command line that `ps` shows. Used by scripts/start_all.sh and by the tests' LiveKit fixture.
#
#   LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... bash scripts/livekit_server.sh DIR [--port P] [--bind ADDR] [--node-ip IP]
#
# DIR holds livekit.yaml (rewritten on every start). Ports: P (default 7880) signalling and HTTP,
# P+1 WebRTC over TCP, P+2 WebRTC over UDP (one muxed port, so a firewall needs three ports, not a
# range). --bind defaults to 127.0.0.1: loopback only, and only loopback ICE candidates. For LAN use
# give --bind 0.0.0.0 and --node-ip <this machine's LAN address> (what browsers are told to reach).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="[livekit_server]"
die() { printf '%s ERROR: %s\n' "$tag" "$1" >&2; [ $# -ge 2 ] && printf '%s   fix: %s\n' "$tag" "$2" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: bash scripts/livekit_server.sh DIR [--port P] [--bind ADDR] [--node-ip IP]"
dir="$1"
shift
port=7880 bind=127.0.0.1 node_ip=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="${2:?}"; shift 2 ;;
    --bind) bind="${2:?}"; shift 2 ;;
    --node-ip) node_ip="${2:?}"; shift 2 ;;
    *) die "unknown argument $1" "see the usage at the top of scripts/livekit_server.sh" ;;
  esac
done

[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65533 ] || die "--port $port is not a port number" "give 1..65533 (it uses P, P+1 and P+2)"
key="${LIVEKIT_API_KEY:-}" secret="${LIVEKIT_API_SECRET:-}"
[ -n "$key" ] && [ -n "$secret" ] || die "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set in the environment" \
  "export the key pair the agent and the token server use (scripts/start_all.sh generates one)"
[[ "$key" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "LIVEKIT_API_KEY must be 1-64 characters of A-Z a-z 0-9 _ . -"
[ "${#secret}" -ge 32 ] || die "LIVEKIT_API_SECRET is ${#secret} characters; the LiveKit server wants at least 32" \
  "use a random one: openssl rand -hex 24"
[[ "$secret" =~ ^[[:graph:]]+$ ]] && [[ "$secret" != *"'"* ]] || die "LIVEKIT_API_SECRET must be printable, without spaces or quotes"
if [ -z "$node_ip" ]; then
  case "$bind" in
    0.0.0.0 | ::) die "--bind $bind needs --node-ip: the address browsers on other machines reach this one at" ;;
    *) node_ip="$bind" ;;
  esac
fi

bin="$(bash "$ROOT/scripts/install_livekit.sh" --path)"
[ -x "$bin" ] || die "no LiveKit server at $bin" "bash scripts/install_livekit.sh"

mkdir -p "$dir"
config="$dir/livekit.yaml"
umask 077
{
  echo "# written by scripts/livekit_server.sh on $(date -Is); holds the API secret (mode 0600)"
  echo "port: $port"
  echo "bind_addresses: ['$bind']"
  echo "rtc:"
  echo "  tcp_port: $((port + 1))"
  echo "  udp_port: $((port + 2))"
  echo "  use_external_ip: false"
  echo "  node_ip: '$node_ip'"
  if [ "$bind" = 127.0.0.1 ]; then
    # only loopback candidates: the other interfaces of this machine are not reachable by the page
    echo "  enable_loopback_candidate: true"
    echo "  ips:"
    echo "    includes: ['127.0.0.1/32']"
  fi
  echo "keys:"
  echo "  '$key': '$secret'"
  echo "logging:"
  echo "  level: ${LIVEKIT_LOG_LEVEL:-info}"
} > "$config.new"
mv "$config.new" "$config"
echo "$tag livekit-server $("$bin" --version | awk '{print $NF}') on $bind:$port (TCP $((port + 1)), UDP $((port + 2))), config $config"
unset LIVEKIT_API_SECRET
exec "$bin" --config "$config"
