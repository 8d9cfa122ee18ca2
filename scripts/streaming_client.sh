#!/usr/bin/env bash
# Stream the microphone (or --file FILE) to the server and print committed lines.
# Configuration by environment (flags win): STREAM_HOST (else IP_ADDR), STREAM_PORT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/woasr" client "$@"
