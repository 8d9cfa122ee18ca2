#!/usr/bin/env bash
# Start the streaming server (sets up .venv on first use). Configuration by
# environment (flags given here win): STREAM_HOST (else IP_ADDR), STREAM_PORT,
# STREAM_MODEL, STREAM_LANG, STREAM_BACKEND, STREAM_MIN_CHUNK.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/woasr" serve "$@"
