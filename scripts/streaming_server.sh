#!/usr/bin/env bash
# Start the streaming server (sets up .venv on first use): TCP on STREAM_PORT (43007) and
# WebSocket/HTTP with the browser page on STREAM_WS_PORT (43008); it prints the page's URL.
# Configuration by environment (flags given here win): STREAM_HOST (else IP_ADDR),
# STREAM_PORT, STREAM_WS_PORT, STREAM_MODEL, STREAM_LANG, STREAM_BACKEND, STREAM_MIN_CHUNK.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/woasr" serve "$@"
