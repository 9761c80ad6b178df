#!/usr/bin/env bash
# Build and install llama-cpp-python from its source release with our patch set applied.
#
# Why: the LLaVA vision graph vendored in llama-cpp-python <= 0.3.36 puts the CLIP class token
# after the patches (llama.cpp issue #25814), which makes every CLIP-based LLaVA (ALLaVA included)
# see a shifted image. patches/llama-cpp-python/*.patch carries the one-line fix until upstream
# ships it. Skipped when the installed build already carries every patch (marker + libmtmd hash,
# see runtimes/llamacpp_patch.py).
#
# Usage: scripts/build_llama_cpp.sh [--force] [--stock --target DIR]
#   --force        rebuild even if the installed build is already patched (with the same flags)
#   --stock        build the unpatched release (for measuring what upstream users get)
#   --target DIR   install into DIR (pip install --target) instead of the active environment
# Env: PYTHON (default: python), LLAMA_CPP_VERSION (0.3.36), CMAKE_ARGS (extra cmake flags),
#      CMAKE_BUILD_PARALLEL_LEVEL (default: nproc), WORKDIR (default: .cache/llama-cpp-python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
WORKDIR="${WORKDIR:-$ROOT/.cache/llama-cpp-python}"
FORCE=0; STOCK=0; TARGET=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) FORCE=1 ;;
    --stock) STOCK=1 ;;
    --target) TARGET="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# Portable x86-64 build (AVX2/FMA/F16C, no AVX-512/AMX) unless CMAKE_ARGS adds more. Why not
# GGML_NATIVE=ON: on AMX-capable Xeons (this project's machines) native builds route quantized
# matmuls through ggml's AMX backend, which segfaults in llama_decode on Q8_0/Q4_0/Q4_K_M models
# (llama.cpp issue #20824, measured here). The flags are recorded in the marker, so a build made
# with other flags is rebuilt.
BUILD_FLAGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF${CMAKE_ARGS:+ $CMAKE_ARGS}"
PATCHES=()
if [[ $STOCK -eq 0 ]]; then
  for p in "$ROOT"/patches/llama-cpp-python/*.patch; do PATCHES+=("$p"); done
fi
NAMES="$(for p in "${PATCHES[@]+"${PATCHES[@]}"}"; do basename "$p"; done | paste -sd, -)"
SITE_ARGS=(); [[ -n "$TARGET" ]] && SITE_ARGS=(--site "$TARGET")

if [[ $STOCK -eq 0 && $FORCE -eq 0 ]] && (cd "$ROOT" && "$PYTHON" -m runtimes.llamacpp_patch check "${SITE_ARGS[@]+"${SITE_ARGS[@]}"}" --patches "$NAMES" --build="$BUILD_FLAGS"); then
  echo "llama-cpp-python already carries: $NAMES — nothing to do (use --force to rebuild)"
  exit 0
fi

if [[ $STOCK -eq 1 && $FORCE -eq 0 && -n "$TARGET" && -d "$TARGET/llama_cpp" ]] && \
   ! (cd "$ROOT" && "$PYTHON" -m runtimes.llamacpp_patch check --site "$TARGET" --patches "$(ls "$ROOT"/patches/llama-cpp-python/*.patch | xargs -n1 basename | paste -sd, -)"); then
  echo "stock llama-cpp-python already in $TARGET — nothing to do (use --force to rebuild)"
  exit 0
fi

mkdir -p "$WORKDIR"
SDIST="$WORKDIR/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  "$PYTHON" -m pip download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$WORKDIR"
fi
SRC="$WORKDIR/src-$([[ $STOCK -eq 1 ]] && echo stock || echo patched)"
rm -rf "$SRC"; mkdir -p "$SRC"
tar xzf "$SDIST" -C "$SRC" --strip-components=1
for p in "${PATCHES[@]+"${PATCHES[@]}"}"; do
  echo "applying $(basename "$p")"
  patch -p1 -d "$SRC" --forward --batch < "$p"
done

# CPU build; the mtmd library is added by llama-cpp-python's own CMakeLists, so tools/examples/tests
# of llama.cpp can be left out to save compile time.
export CMAKE_ARGS="$BUILD_FLAGS"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
START=$(date +%s)
if [[ -n "$TARGET" ]]; then
  # dependencies come from the environment that puts TARGET on its path
  "$PYTHON" -m pip install --no-cache-dir --no-deps --upgrade --target "$TARGET" "$SRC"
else
  # runtime dependencies of llama-cpp-python first, then the package itself without touching them
  "$PYTHON" -m pip install "typing-extensions>=4.5.0" "numpy>=1.20.0" "diskcache>=5.6.1" "jinja2>=2.11.3"
  "$PYTHON" -m pip install --no-cache-dir --force-reinstall --no-deps "$SRC"
fi
echo "built in $(( $(date +%s) - START )) s"
if [[ $STOCK -eq 0 ]]; then
  (cd "$ROOT" && "$PYTHON" -m runtimes.llamacpp_patch write "${SITE_ARGS[@]+"${SITE_ARGS[@]}"}" --patches "$NAMES" --build="$BUILD_FLAGS")
fi
