#!/usr/bin/env bash
# The Python package on aarch64 (NEON) checked under emulation: cross-compiles the _native
# extension for aarch64 against Debian bookworm's arm64 Python 3.11 and runs the Python test
# suite with that arm64 python3.11, its NumPy (1.24), pytest and hypothesis under qemu-user, in
# build/arm-python.  tools/arm_check.sh does the same for the C++ kernel tests.  The peers
# (torch, onnxruntime, scipy, dask, ...) are not in the sysroot: their tests skip.  What
# emulation cannot tell is speed: ARM performance is not measured here.
#
# Steps: (1) apt-get download the arm64 .debs (Python, NumPy, pytest, hypothesis, threadpoolctl
# and the libraries they load) into $DEBS, reusing those already there; (2) dpkg -x them into
# $SYSROOT (no maintainer scripts run: the BLAS/LAPACK alternatives are linked by hand);
# (3) configure and build the module with aarch64-linux-gnu-g++ against the sysroot's Python
# headers and the venv's pybind11; (4) lay out build/arm-python/pkg/cppconv (python/cppconv and
# the aarch64 .so); (5) run pytest, one test file at a time, under qemu-aarch64 -L $SYSROOT and
# print a summary per file (passed, failed, skipped, seconds).  Exit status 1 if a file failed.
#
# Needs (Debian bookworm): apt-get install g++-aarch64-linux-gnu qemu-user, the arm64
# architecture added (dpkg --add-architecture arm64 && apt-get update), network for the first
# download (about 40 MB); cmake, ninja and pybind11 from the venv (.venv, or PYTHON), whose
# Python should be 3.11 like the sysroot's.
#
# Usage: tools/arm_python_check.sh [test files...]; without arguments the test files in
# FILES below.  Environment: SYSROOT (default build/arm-python/sysroot), DEBS (where the .debs
# are downloaded or found, default build/arm-python/debs), PYTHON, JOBS (build jobs, 2),
# PYTEST_ARGS (extra pytest options, e.g. "-x" or "-k pool").  Time on two shared cores:
# about ten minutes to download, extract and build, then the emulated tests, which run 30 to
# 100 times slower than natively: test_conv2d alone took 28 minutes, the default files take
# hours (run it in the background, or name the files).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export PATH="$(dirname "$PYTHON"):$PATH"  # the venv's cmake and ninja
OUT=$ROOT/build/arm-python
SYSROOT=${SYSROOT:-$OUT/sysroot}
DEBS=${DEBS:-$OUT/debs}
PYVER=3.11
mkdir -p "$OUT" "$SYSROOT" "$DEBS"
SYSROOT=$(cd "$SYSROOT" && pwd)
DEBS=$(cd "$DEBS" && pwd)

# The test files run by default.  Not tried under emulation: test_packaging, test_typing and
# test_docs (they need pip, mypy, the stub generator and the docs' tools), test_cli (the
# demo's and bench's peers), test_memory (resident-set measurements, which qemu's own memory
# blurs); the peers' own files (test_dask, test_onnx, test_from_torch, test_signal) would skip
# whole.
FILES=(
  tests/test_conv2d.py tests/test_conv2d_errors.py tests/test_conv_nd.py tests/test_pool.py
  tests/test_pool_nd.py tests/test_conv_transpose.py tests/test_conv_transpose_nd.py
  tests/test_dtypes.py tests/test_leaky_slope.py tests/test_padding_constant.py
  tests/test_precision.py tests/test_quant.py tests/test_messages.py tests/test_interop.py
  tests/test_layers.py tests/test_properties.py tests/test_fuzz.py tests/test_threads.py
  tests/test_threadpool.py tests/test_concurrency.py
)

# (1) The arm64 packages: Debian bookworm's, named here rather than resolved (the closure of
# python3.11, python3-numpy, python3-pytest, python3-hypothesis, python3-threadpoolctl).
PACKAGES=(  # arm64
  libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
  libcrypt1 libuuid1 libsqlite3-0 libreadline8 libtinfo6 libncursesw6 libdb5.3 libnsl2 libtirpc3
  libgssapi-krb5-2 libk5crypto3 libkrb5-3 libkrb5support0 libkeyutils1 libcom-err2
  libblas3 liblapack3 libgfortran5
  python3.11 python3.11-minimal libpython3.11 libpython3.11-minimal libpython3.11-stdlib libpython3.11-dev
  python3-numpy
)
PACKAGES_ALL=(  # architecture-independent
  python3-pytest python3-pluggy python3-iniconfig python3-packaging python3-attr
  python3-hypothesis python3-sortedcontainers python3-typing-extensions python3-threadpoolctl
)
missing=()
for p in "${PACKAGES[@]}"; do
  compgen -G "$DEBS/${p}_*_arm64.deb" >/dev/null || missing+=("$p:arm64")
done
for p in "${PACKAGES_ALL[@]}"; do
  compgen -G "$DEBS/${p}_*_all.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== arm-python: downloading ${#missing[@]} packages into $DEBS"
  (cd "$DEBS" && apt-get download "${missing[@]}") >"$OUT/download.log" 2>&1 ||
    { cat "$OUT/download.log"; echo "== arm-python: apt-get download failed (is arm64 added?" \
      "dpkg --add-architecture arm64 && apt-get update)" >&2; exit 1; }
fi

# (2) The sysroot: each .deb extracted once (a stamp per file).
mkdir -p "$SYSROOT/.extracted"
for p in "${PACKAGES[@]}" "${PACKAGES_ALL[@]}"; do
  for deb in "$DEBS/${p}"_*_arm64.deb "$DEBS/${p}"_*_all.deb; do
    [[ -e $deb ]] || continue
    stamp=$SYSROOT/.extracted/$(basename "$deb")
    [[ -e $stamp ]] || { dpkg -x "$deb" "$SYSROOT" && touch "$stamp"; }
  done
done
# Absolute links (ld.so's, say) made relative: qemu -L re-roots the paths it opens, but the host
# kernel resolves link targets, which would leave the sysroot.
find "$SYSROOT" -type l -lname '/*' | while read -r link; do
  ln -sfn --relative "$SYSROOT$(readlink "$link")" "$link"
done
multiarch=$SYSROOT/usr/lib/aarch64-linux-gnu
# What update-alternatives would have linked.
[[ -e $multiarch/libblas.so.3 ]] || ln -sfn blas/libblas.so.3 "$multiarch/libblas.so.3"
[[ -e $multiarch/liblapack.so.3 ]] || ln -sfn lapack/liblapack.so.3 "$multiarch/liblapack.so.3"
PY_ARM=$SYSROOT/usr/bin/python$PYVER
[[ -x $PY_ARM && -e $SYSROOT/usr/include/python$PYVER/Python.h && -e $SYSROOT/lib/ld-linux-aarch64.so.1 ]] ||
  { echo "== arm-python: the sysroot lacks python$PYVER, its headers or ld.so" >&2; exit 1; }
echo "== arm-python: sysroot $SYSROOT ($(ls "$SYSROOT/.extracted" | wc -l) packages)"

# (3) The module, cross-built.  The host interpreter only satisfies find_package(Python
# Interpreter); headers come from the sysroot (whose pyconfig.h includes
# <aarch64-linux-gnu/python3.11/pyconfig.h>: -idirafter), and the suffix is the arm64 interpreter's.
build=$OUT/build
suffix=.cpython-${PYVER/./}-aarch64-linux-gnu.so
pybind11_dir=$("$PYTHON" -m pybind11 --cmakedir)
cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_FIND_ROOT_PATH="/usr/aarch64-linux-gnu;$SYSROOT" \
  -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY \
  -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=BOTH -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=BOTH \
  -DPython_EXECUTABLE="$PYTHON" -DPython_INCLUDE_DIR="$SYSROOT/usr/include/python$PYVER" \
  -DPYTHON_MODULE_EXTENSION="$suffix" -DPYTHON_MODULE_DEBUG_POSTFIX= \
  -Dpybind11_DIR="$pybind11_dir" -DCMAKE_CXX_FLAGS="-idirafter $SYSROOT/usr/include" \
  -DCPPCONV_REQUIRE_OPENMP=ON >"$OUT/build.log" 2>&1 ||
  { cat "$OUT/build.log"; echo "== arm-python: configure failed" >&2; exit 1; }
cmake --build "$build" -j "${JOBS:-2}" >>"$OUT/build.log" 2>&1 ||
  { grep -E -A4 "error" "$OUT/build.log" | head -60; echo "== arm-python: build failed (log: $OUT/build.log)" >&2; exit 1; }
so=$build/_native$suffix
file -L "$so" | grep -q "ARM aarch64" || { echo "== arm-python: $so is not an aarch64 object" >&2; exit 1; }
echo "== arm-python: built $(basename "$so"), $(grep -c "warning:" "$OUT/build.log" || true) warnings (log: $OUT/build.log)"

# (4) An importable package: the sources, the version file the wheel build would write, the .so.
pkg=$OUT/pkg
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r "$ROOT/python/cppconv" "$pkg/"
find "$pkg" -name "*.so" -delete
find "$pkg" -name __pycache__ -prune -exec rm -rf {} +
[[ -e $pkg/cppconv/_version.py ]] ||
  echo "__version__ = version = \"0.0.0+arm.$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\"" \
    >"$pkg/cppconv/_version.py"
cp "$so" "$pkg/cppconv/"

# (5) The tests, under emulation.  PYTHONPATH puts the package before any other; the rootdir's
# pyproject.toml sets testpaths; -p no:cacheprovider keeps pytest's cache out of the tree.
# The interpreter is started through a host script beside it, passed as argv[0] (qemu -0):
# sys.executable names that script, so the tests' subprocesses ([sys.executable, "-c", ...])
# run under qemu too without binfmt_misc, and Python still finds its prefix from usr/bin.
wrapper=$SYSROOT/usr/bin/python$PYVER-qemu
printf '#!/bin/sh\nexec qemu-aarch64 -L "%s" -0 "%s" "%s" "$@"\n' "$SYSROOT" "$wrapper" "$PY_ARM" >"$wrapper"
chmod +x "$wrapper"
emulate=("$wrapper")
isa=$(PYTHONPATH=$pkg "${emulate[@]}" -c \
  "import numpy, cppconv; from cppconv import _native; print(_native.default_isa(), 'numpy', numpy.__version__)")
echo "== arm-python: cppconv imports under qemu-aarch64, ISA $isa"
if (($#)); then files=("$@"); else files=("${FILES[@]}"); fi
summary=$OUT/summary.txt
: >"$summary"
status=0
start_all=$SECONDS
for f in "${files[@]}"; do
  name=$(basename "$f" .py)
  log=$OUT/$name.log
  t0=$SECONDS
  rc=0
  PYTHONPATH=$pkg PYTHONDONTWRITEBYTECODE=1 "${emulate[@]}" -m pytest -q -p no:cacheprovider \
    ${PYTEST_ARGS:-} "$f" >"$log" 2>&1 || rc=$?
  line=$(grep -E "^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected)|no tests ran" "$log" | tail -1 | tr -d '=' || true)
  printf '%-40s %-60s %5ds\n' "$name" "${line:-rc=$rc, see $log}" $((SECONDS - t0)) | tee -a "$summary"
  # (pytest's 5: nothing collected, e.g. a file that skips whole.)
  ((rc == 0 || rc == 5)) || { status=1; grep -E "^(FAILED|ERROR) " "$log" | head -20 || true; }
done
echo "== arm-python: $((SECONDS - start_all))s under emulation (summary: $summary, logs: $OUT/*.log)"
((status == 0)) && echo "== arm-python: the Python tests passed under qemu-aarch64" ||
  echo "== arm-python: some tests failed under qemu-aarch64" >&2
exit $status
