#!/usr/bin/env bash
# Start the WebSocket/HTTP server alone (sets up .venv on first use): ws://HOST:43008/,
# the browser page at http://HOST:43008/. Configuration by environment (flags given
# here win): STREAM_WS_PORT, STREAM_HOST (else IP_ADDR), STREAM_MODEL, STREAM_LANG,
# STREAM_BACKEND, STREAM_MIN_CHUNK. scripts/streaming_server.sh serves TCP and WebSocket together.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/woasr" serve --tcp-port 0 "$@"
