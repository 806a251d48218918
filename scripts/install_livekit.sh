#!/usr/bin/env bash
# Installs the pinned LiveKit server into the project's tool folder (.tools/bin/livekit-server):
# built from source with Go from the Go module proxy. Run by scripts/test.sh and scripts/start_all.sh
# when the binary is missing; finished work is skipped (a second run costs a second).
#
#   bash scripts/install_livekit.sh          # install (or confirm) the pinned version
#   bash scripts/install_livekit.sh --path   # print where the binary goes, install nothing
#   bash scripts/install_livekit.sh --version   # print the pinned version
#
# Settings: TOOLS_DIR (default <repo>/.tools). Go's own caches (GOMODCACHE, GOCACHE) stay where Go
# keeps them, so a rebuild after `rm -rf .tools` takes seconds, not minutes.
#
# Why v1.13.5 and `go install`: it is the newest release whose go.mod has no `replace` directives.
# Later releases replace pion's webrtc/ice/dtls with LiveKit forks, which `go install pkg@version`
# refuses and which the Go module proxy does not serve, so they cannot be built from the proxy.
set -euo pipefail

LIVEKIT_SERVER_VERSION=v1.13.5  # the one place the server version is pinned
MODULE=github.com/livekit/livekit-server

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS_DIR/bin/livekit-server"
tag="[install_livekit]"

case "${1:-}" in
  --path) printf '%s\n' "$BIN"; exit 0 ;;
  --version) printf '%s\n' "$LIVEKIT_SERVER_VERSION"; exit 0 ;;
  "") ;;
  *) echo "usage: bash scripts/install_livekit.sh [--path|--version]" >&2; exit 2 ;;
esac

installed_version() { "$BIN" --version 2>/dev/null | awk '{print $NF}'; }

if [ -x "$BIN" ] && [ "$(installed_version)" = "${LIVEKIT_SERVER_VERSION#v}" ]; then
  echo "$tag livekit-server $LIVEKIT_SERVER_VERSION is installed ($BIN)"
  exit 0
fi

if ! command -v go > /dev/null 2>&1; then
  cat >&2 <<EOF
$tag ERROR: Go is not on PATH, and the LiveKit server is built with it.
$tag   fix, one of:
$tag   - install Go 1.26 or newer (https://go.dev/dl/), then run this script again;
$tag   - put the release binary there yourself: download livekit_${LIVEKIT_SERVER_VERSION#v}_linux_amd64.tar.gz
$tag     from https://github.com/livekit/livekit-server/releases and copy its livekit-server to $BIN;
$tag   - use a LiveKit deployment you already have: export LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET;
$tag   - or run without LiveKit: scripts/start_all.sh start falls back to direct WebRTC mode.
EOF
  exit 1
fi

echo "$tag building livekit-server $LIVEKIT_SERVER_VERSION with $(go version | awk '{print $3}')" \
     "(the first build downloads ~300 modules and compiles for 3-5 minutes on 2 cores)"
mkdir -p "$TOOLS_DIR/bin"
staging="$(mktemp -d "$TOOLS_DIR/build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
log="$staging/build.log"
started=$SECONDS
# -v names each package as it is compiled: a count every 100 packages shows the build is moving
if ! GOBIN="$staging" GOFLAGS="${GOFLAGS:-} -trimpath" go install -v "$MODULE/cmd/server@$LIVEKIT_SERVER_VERSION" 2>&1 |
    tee "$log" | awk -v tag="$tag" '{ n++ } n % 100 == 0 { printf "%s ... %d packages\n", tag, n; fflush() }'; then
  echo "$tag ERROR: go install $MODULE/cmd/server@$LIVEKIT_SERVER_VERSION failed; its last lines:" >&2
  tail -n 20 "$log" >&2
  echo "$tag   fix: check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY)), then run this script again" >&2
  exit 1
fi
mv "$staging/server" "$BIN"
echo "$tag installed livekit-server $(installed_version) at $BIN in $((SECONDS - started)) s"
