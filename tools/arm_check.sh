#!/usr/bin/env bash
# The aarch64 (NEON) build checked under emulation: cross-compiles the C++ core with the kernel
# tests (cpp/tests/kernel_tests.cpp) for aarch64 and runs them with qemu-user, in build/arm.
# Every algorithm of the neon ISA is forced on problems around its tiles against the float64
# reference (CPPCONV_TEST_SEED draws another sweep), and the NEON backend is tested itself
# (cpp/tests/simd_tests.cpp).  What emulation cannot tell is speed: ARM
# performance is not measured here.
#
# Needs (Debian): apt-get install g++-aarch64-linux-gnu qemu-user; cmake and ninja from the venv
# (.venv, or PYTHON).  Usage: tools/arm_check.sh; about ten minutes on two cores, most of it the
# emulated run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export PATH="$(dirname "$PYTHON"):$PATH"  # the venv's cmake and ninja
SYSROOT=${SYSROOT:-/usr/aarch64-linux-gnu}
dir=$ROOT/build/arm

cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_FIND_ROOT_PATH="$SYSROOT" \
  -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY \
  -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DCMAKE_CROSSCOMPILING_EMULATOR="qemu-aarch64;-L;$SYSROOT" \
  -DCPPCONV_CORE_ONLY=ON -DCPPCONV_BUILD_TESTS=ON -DCPPCONV_REQUIRE_OPENMP=ON >"$dir.log" 2>&1 ||
  { cat "$dir.log"; echo "== arm: configure failed" >&2; exit 1; }
cmake --build "$dir" -j "${JOBS:-2}" >>"$dir.log" 2>&1 ||
  { grep -E -A4 "error" "$dir.log" | head -60; echo "== arm: build failed (log: $dir.log)" >&2; exit 1; }
echo "== arm: built, $(grep -c "warning:" "$dir.log" || true) warnings (log: $dir.log)"
# (CTest runs the test through CMAKE_CROSSCOMPILING_EMULATOR.)
ctest --test-dir "$dir" --output-on-failure
echo "== arm: kernel tests passed under qemu-aarch64"
