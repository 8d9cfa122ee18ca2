#!/usr/bin/env bash
# Set up .venv-triton for `woasr triton serve` (see scripts/bootstrap.sh).
exec bash "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" triton
