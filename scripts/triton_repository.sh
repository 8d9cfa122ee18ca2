#!/usr/bin/env bash
# Serve deploy/model_repository (the layout of the official tritonserver container: Python-backend
# models onto woasr) with the tritonserver that PyTriton bundles in .venv-triton, on this machine's
# CPU. Extra arguments go to tritonserver (e.g. --grpc-port=8001 --http-port=8000 --metrics-port=8002).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap_triton.sh"
venv="$root/.venv-triton"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
server="$site/pytriton/tritonserver"
backends="$(mktemp -d)"
trap 'rm -rf "$backends"' EXIT
mkdir -p "$backends/python"
cp "$server"/backends/python/*.so "$server"/backends/python/*.py "$backends/python/"
cp "$server/python_backend_stubs/$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/triton_python_backend_stub" "$backends/python/"
# The stub links this interpreter's libpython and the CUDA runtime stub PyTriton ships (unused on CPU).
export LD_LIBRARY_PATH="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))'):$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$venv/bin:$PATH"  # the Python-backend stub runs the python it finds first
"$server/bin/tritonserver" --model-repository="$root/deploy/model_repository" --backend-directory="$backends" \
  --allow-metrics=false "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; rm -rf "$backends"' EXIT INT TERM
wait "$pid"
