#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with torch, this project with its
# extras, and one llama.cpp build with our patches and runtime CPU dispatch (scripts/build_llama_cpp.sh)
# that serves llama-cpp-python and the upstream tools (llama-mtmd-cli, llama-bench, llama-quantize).
# Re-running is cheap: every step is skipped when already done.
#
# Env: PYTHON (default python3), VENV (default .venv), TORCH_SPEC (default torch==2.13.0, the CPU
# wheel on the project machines; on a CUDA host set e.g. TORCH_SPEC=torch), EXTRAS (default
# gguf,onnx,gptq,coreml,synth,dev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-gguf,onnx,gptq,coreml,synth,dev}"

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! python -c "import torch" 2>/dev/null; then
  echo "install: $TORCH_SPEC"
  python -m pip install -q "$TORCH_SPEC"
fi
stamp="$VENV/.allava-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" || "$(cat "$stamp")" != "$EXTRAS" ]]; then
  echo "install: allava-edge[$EXTRAS]"
  python -m pip install -q -e ".[$EXTRAS]"
  echo "$EXTRAS" > "$stamp"  # the extras installed: another EXTRAS reinstalls
fi
# llama-cpp-python and llama-mtmd-cli/llama-bench from one patched build (~15 min on 2 cores, once)
PYTHON=python bash scripts/build_llama_cpp.sh
# the llama.cpp runtime's greedy decode loop in C (runtimes/native_loop.py; optional, cached per version)
python -m runtimes.native_loop || echo "install: no C compiler; the llama.cpp runtime uses its Python decode loop"

# Chromium for the browser example's test (tests/examples/test_browser_page.py); optional and idempotent:
# skipped when a Chromium is already there or without root/apt-get, and a failed apt-get only means that test skips.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-headless-shell >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install: chromium (apt-get, for the browser example's test)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null 2>&1 || echo "install: chromium could not be installed; tests/examples/test_browser_page.py will skip"
  else
    echo "install: no chromium (needs root and apt-get); tests/examples/test_browser_page.py will skip"
  fi
fi
