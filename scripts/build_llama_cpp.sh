#!/usr/bin/env bash
# Build llama.cpp once from llama-cpp-python's source release with our patch set, for every user of
# it in this project: llama-cpp-python (the runtime, MTMDChatHandler, the GGUF quantizer) and the
# upstream tools (llama-mtmd-cli for the user-path check, llama-bench for pp/tg figures,
# llama-quantize). One CMake build, one set of libraries: the tools and the Python package carry
# byte-identical copies.
#
# Why runtime CPU dispatch (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS, as upstream's release builds):
# one libggml-cpu-<level>.so per x86 level (x64 ... haswell, skylakex, icelake, zen4, alderlake),
# and ggml loads the best one the CPU it runs on supports. A portable AVX2 build left every AVX-512/
# VNNI/BF16 kernel unused (~1.9x slower prefill on AVX-512 hosts, docs/experiments.md §11); a native
# build crashed on AMX Xeons, whose AMX path segfaults on quantized GGUFs (llama.cpp #20824). The
# AMX variant is left out (patches/llama-cpp-python/0003), so AMX hosts load the zen4 variant.
# The chosen variant shows in LlamaCppRuntime.build_info() and the bench report's host section.
#
# Patches (patches/llama-cpp-python/*.patch, patches/llama-mtmd-cli/*.patch): the CLIP class-token
# order (llama.cpp #25814), backend loading at import in llama_cpp (llama-cpp-python #2069), no AMX
# variant, and the CLI's lost answer at exit (llama.cpp #22142).
#
# Usage: scripts/build_llama_cpp.sh [--force] [--stock --target DIR]
#   --force        rebuild even if the installed build already carries these patches and flags
#   --stock        also build upstream's libmtmd (no CLS-order fix) and install a llama_cpp package
#                  with it into DIR (for measuring what upstream users get; the rest is this build)
#   --target DIR   where --stock installs (default .cache/llama-cpp-stock)
# Env: PYTHON (default: python), LLAMA_CPP_VERSION (0.3.36), CMAKE_ARGS (extra cmake flags),
#      CMAKE_BUILD_PARALLEL_LEVEL (default: nproc), WORKDIR (default: .cache/llama-cpp-python),
#      TOOLS_DIR (default: .cache/llama-cpp-tools; the tools and libraries land in TOOLS_DIR/bin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
WORKDIR="${WORKDIR:-$ROOT/.cache/llama-cpp-python}"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.cache/llama-cpp-tools}"
FORCE=0; STOCK=0; TARGET="$ROOT/.cache/llama-cpp-stock"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) FORCE=1 ;;
    --stock) STOCK=1 ;;
    --target) TARGET="$2"; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
  echo "build_llama_cpp: cmake and a C++ compiler are needed (apt-get install cmake g++)" >&2
  exit 2
fi

BUILD_FLAGS="-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON${CMAKE_ARGS:+ $CMAKE_ARGS}"
TOOLS=(llama-mtmd-cli llama-bench llama-quantize)
PATCH_FILES=("$ROOT"/patches/llama-cpp-python/*.patch "$ROOT"/patches/llama-mtmd-cli/*.patch)
NAMES="$(for p in "${PATCH_FILES[@]}"; do basename "$p"; done | paste -sd, -)"
SRC="$WORKDIR/src"
BUILD="$WORKDIR/build"

built_already() {
  [[ $FORCE -eq 0 ]] || return 1
  (cd "$ROOT" && "$PYTHON" -m runtimes.llamacpp_patch check --patches "$NAMES" --build="$BUILD_FLAGS") || return 1
  for t in "${TOOLS[@]}"; do [[ -x "$TOOLS_DIR/bin/$t" ]] || return 1; done
}

if built_already; then
  echo "llama.cpp already built with $NAMES and these flags — nothing to do (use --force to rebuild)"
else
  mkdir -p "$WORKDIR"
  SDIST="$WORKDIR/llama_cpp_python-$VERSION.tar.gz"
  if [[ ! -f "$SDIST" ]]; then
    "$PYTHON" -m pip download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$WORKDIR"
  fi
  rm -rf "$SRC" "$BUILD"; mkdir -p "$SRC"
  tar xzf "$SDIST" -C "$SRC" --strip-components=1
  for p in "${PATCH_FILES[@]}"; do
    echo "applying $(basename "$p")"
    patch -p1 -d "$SRC" --forward --batch < "$p" >/dev/null
  done

  START=$(date +%s)
  GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
  # every library and tool lands in $BUILD/bin; RPATH $ORIGIN keeps each copy of that folder whole
  # shellcheck disable=SC2086
  cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" "${GEN[@]+"${GEN[@]}"}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN' $BUILD_FLAGS >/dev/null
  # the CPU variants are modules nothing links against: name them (ggml-cpu-<level>)
  mapfile -t VARIANTS < <(cmake --build "$BUILD" --target help | grep -oE 'ggml-cpu-[a-z0-9_]+' | sort -u)
  echo "building llama, mtmd, ${TOOLS[*]} and ${#VARIANTS[@]} CPU variants: ${VARIANTS[*]#ggml-cpu-}"
  cmake --build "$BUILD" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    --target llama mtmd "${TOOLS[@]}" "${VARIANTS[@]}" >/dev/null
  echo "built in $(( $(date +%s) - START )) s"

  # the tools, with the libraries beside them (llama.cpp's programs look for backends next to themselves)
  rm -rf "$TOOLS_DIR.partial"; mkdir -p "$TOOLS_DIR.partial/bin"
  cp -a "$BUILD"/bin/*.so* "$TOOLS_DIR.partial/bin/"
  for t in "${TOOLS[@]}"; do cp -a "$BUILD/bin/$t" "$TOOLS_DIR.partial/bin/"; done
  echo "$NAMES; $BUILD_FLAGS" > "$TOOLS_DIR.partial/stamp"
  rm -rf "$TOOLS_DIR"; mv "$TOOLS_DIR.partial" "$TOOLS_DIR"

  # llama-cpp-python: the Python package only (LLAMA_BUILD=OFF compiles nothing), then the same libraries
  "$PYTHON" -m pip install -q "typing-extensions>=4.5.0" "numpy>=1.20.0" "diskcache>=5.6.1" "jinja2>=2.11.3"
  CMAKE_ARGS="-DLLAMA_BUILD=OFF" "$PYTHON" -m pip install -q --no-cache-dir --force-reinstall --no-deps "$SRC"
  PKG="$("$PYTHON" -c 'import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec("llama_cpp").origin).parent)')"
  rm -rf "$PKG/lib"; mkdir -p "$PKG/lib"
  cp -a "$BUILD"/bin/*.so* "$PKG/lib/"
  (cd "$ROOT" && "$PYTHON" -m runtimes.llamacpp_patch write --patches "$NAMES" --build="$BUILD_FLAGS")
  (cd "$ROOT" && "$PYTHON" -m runtimes.llamacpp_patch status)
fi

if [[ $STOCK -eq 1 ]]; then
  # upstream's libmtmd: undo the CLS-order fix in the kept build tree, rebuild that one library,
  # install it beside this build's other libraries into TARGET, then restore the fix
  [[ -d "$BUILD" && -d "$SRC" ]] || { echo "--stock needs the build tree ($BUILD); rerun with --force" >&2; exit 2; }
  FIX="$ROOT/patches/llama-cpp-python/0001-llava-cls-before-patches.patch"
  patch -p1 -R -d "$SRC" --batch < "$FIX" >/dev/null
  trap 'patch -p1 -d "$SRC" --forward --batch < "$FIX" >/dev/null; cmake --build "$BUILD" --target mtmd >/dev/null' EXIT
  cmake --build "$BUILD" --target mtmd >/dev/null
  PKG="$("$PYTHON" -c 'import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec("llama_cpp").origin).parent)')"
  rm -rf "$TARGET.partial"; mkdir -p "$TARGET.partial"
  cp -a "$PKG" "$TARGET.partial/llama_cpp"
  rm -f "$TARGET.partial/llama_cpp/ALLAVA_PATCHES.json"
  cp -a "$BUILD"/bin/libmtmd.so* "$TARGET.partial/llama_cpp/lib/"
  rm -rf "$TARGET"; mv "$TARGET.partial" "$TARGET"
  echo "stock libmtmd (no CLS-order fix) installed with llama_cpp into $TARGET"
fi
