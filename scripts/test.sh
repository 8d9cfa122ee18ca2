#!/usr/bin/env bash
# Bootstrap, then run the whole test suite (real model, real audio from ../shared).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
bash "$root/scripts/bootstrap_triton.sh"  # PyTriton for tests/test_triton.py (numpy < 2: its own environment)
bash "$root/scripts/browser_deps.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
