#!/usr/bin/env bash
# Build upstream llama-mtmd-cli from the same llama.cpp source and patch set as our llama-cpp-python
# (the llama.cpp vendored in llama-cpp-python's source release, patches/llama-cpp-python/*.patch),
# plus the CLI's own fix (patches/llama-mtmd-cli/*.patch: its answer could be lost at exit,
# llama.cpp #22142), into .cache/llama-cpp-tools/bin/llama-mtmd-cli, statically linked.
#
# Why: the README tells users to run `llama-mtmd-cli -m LM.gguf --mmproj MMPROJ.gguf --image IMG -p ...`;
# export/check.py --user-path runs exactly that binary and compares its answers with PyTorch's.
# Skipped when the binary exists and was built from the same version, patches and flags (stamp file).
#
# Usage: scripts/build_mtmd_cli.sh [--force]
# Env: LLAMA_CPP_VERSION (0.3.36), CMAKE_BUILD_PARALLEL_LEVEL (default: nproc),
#      WORKDIR (default: .cache/llama-cpp-python), OUTDIR (default: .cache/llama-cpp-tools).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
WORKDIR="${WORKDIR:-$ROOT/.cache/llama-cpp-python}"
OUTDIR="${OUTDIR:-$ROOT/.cache/llama-cpp-tools}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { sed -n '2,12p' "$0"; exit 0; }

if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
  echo "build_mtmd_cli: no cmake or C++ compiler; llama-mtmd-cli not built (the user-path check skips it)" >&2
  exit 0
fi
# portable x86-64 build, as scripts/build_llama_cpp.sh (native builds crash on AMX Xeons: llama.cpp #20824)
FLAGS="-DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON"
PATCH_FILES=("$ROOT"/patches/llama-cpp-python/*.patch "$ROOT"/patches/llama-mtmd-cli/*.patch)
PATCH_SUMS="$(cat "${PATCH_FILES[@]}" | sha256sum | cut -c1-16)"
STAMP="llama-cpp-python $VERSION; patches $PATCH_SUMS; $FLAGS"
BIN="$OUTDIR/bin/llama-mtmd-cli"
if [[ $FORCE -eq 0 && -x "$BIN" && -f "$OUTDIR/stamp" && "$(cat "$OUTDIR/stamp")" == "$STAMP" ]]; then
  echo "llama-mtmd-cli already built ($BIN)"
  exit 0
fi

mkdir -p "$WORKDIR"
SDIST="$WORKDIR/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  python -m pip download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$WORKDIR"
fi
SRC="$WORKDIR/src-tools"
rm -rf "$SRC"; mkdir -p "$SRC"
tar xzf "$SDIST" -C "$SRC" --strip-components=1
for p in "${PATCH_FILES[@]}"; do
  patch -p1 -d "$SRC" --forward --batch < "$p" >/dev/null
done
START=$(date +%s)
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
# shellcheck disable=SC2086
cmake -S "$SRC/vendor/llama.cpp" -B "$SRC/build" "${GEN[@]+"${GEN[@]}"}" -DCMAKE_BUILD_TYPE=Release $FLAGS >/dev/null
cmake --build "$SRC/build" --target llama-mtmd-cli -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >/dev/null
mkdir -p "$OUTDIR/bin"
cp "$SRC/build/bin/llama-mtmd-cli" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "$STAMP" > "$OUTDIR/stamp"
rm -rf "$SRC"
echo "built $BIN in $(( $(date +%s) - START )) s"
