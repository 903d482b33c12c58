#!/usr/bin/env bash
# Compile checks of the C++ sources with compilers and settings that this machine's own build
# does not use, each a CMake build (the flags are CMakeLists.txt's) in build/check-<name>:
#
#   clang   the whole extension, binding included, with clang++ and OpenMP (LLVM's libomp)
#   mingw   every cpp/ source for each x86-64 ISA with MinGW-w64 and OpenMP: the Windows code
#           paths (_WIN32).  Not the binding, which needs Windows' Python headers.
#   plain   the C++ core with CPPCONV_PLAIN_VECTORS: the vector code (isa_common.h, VecOf) that
#           compilers without GCC's vector extensions, MSVC, get
#   noomp   the whole extension without OpenMP (CMAKE_DISABLE_FIND_PACKAGE_OpenMP)
#
# Needs (Debian): apt-get install clang libomp-dev g++-mingw-w64-x86-64; cmake, ninja and
# pybind11 from the venv (.venv, or PYTHON).  Usage: tools/compile_check.sh [NAME ...] (default
# all); a few minutes each on two cores.  MSVC itself cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PYTHON")
export PATH="$BIN:$PATH"  # the venv's cmake and ninja

# $1: name  $2...: CMake options
check() {
  local name=$1
  shift
  local dir=$ROOT/build/check-$name
  echo "== $name"
  rm -rf "$dir"
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.log" 2>&1 ||
    { cat "$dir.log"; echo "== $name: configure failed" >&2; return 1; }
  if ! cmake --build "$dir" >>"$dir.log" 2>&1; then
    grep -E -A4 "error" "$dir.log" | head -60
    echo "== $name: build failed (log: $dir.log)" >&2
    return 1
  fi
  echo "== $name: ok, $(grep -c "warning:" "$dir.log" || true) warnings (log: $dir.log)"
}

module=(-DPython_EXECUTABLE="$PYTHON" -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)")
mingw=x86_64-w64-mingw32-g++-posix  # (the -win32 flavour has no std::mutex)

run() {
  case $1 in
    clang) check clang -DCMAKE_CXX_COMPILER=clang++ -DCPPCONV_REQUIRE_OPENMP=ON "${module[@]}" ;;
    mingw) check mingw -DCMAKE_SYSTEM_NAME=Windows -DCMAKE_SYSTEM_PROCESSOR=AMD64 \
             -DCMAKE_CXX_COMPILER=$mingw -DCPPCONV_REQUIRE_OPENMP=ON -DCPPCONV_CORE_ONLY=ON ;;
    plain) check plain -DCMAKE_CXX_FLAGS=-DCPPCONV_PLAIN_VECTORS -DCPPCONV_CORE_ONLY=ON ;;
    noomp) check noomp -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON "${module[@]}" ;;
    *) echo "usage: $0 [clang|mingw|plain|noomp ...]" >&2; exit 2 ;;
  esac
}

if [ $# -eq 0 ]; then set -- clang mingw plain noomp; fi
for name in "$@"; do run "$name"; done
echo "== compile checks passed: $*"
