#!/usr/bin/env bash
# Builds cppconv's extension with sanitizers, each build in its own virtual environment, and
# runs tests under them.  Any sanitizer report fails the script.
#
#   1. AddressSanitizer + UndefinedBehaviorSanitizer (CPPCONV_SANITIZE="address;undefined"),
#      UBSan with -fno-sanitize-recover=all so that every report aborts the process: the
#      correctness, hostile-input and property tests.
#   2. ThreadSanitizer (CPPCONV_SANITIZE=thread) over the multi-threaded tests.
#
# Usage: tools/sanitize.sh [asan|tsan|all]   (default all; SANITIZE_DIR moves the work folder)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${SANITIZE_DIR:-$ROOT/build/sanitize}
PYTHON=${PYTHON:-python3}
WHICH=${1:-all}
mkdir -p "$WORK"

# The sanitizer runtimes of the compiler that builds the extension.  Python itself is not
# instrumented, so the runtime must be loaded first, before the interpreter starts; and
# libstdc++ with it, or the runtime's __cxa_throw interceptor finds no real __cxa_throw (the
# extension brings libstdc++ in later, by dlopen) and the first C++ exception aborts with
# "CHECK failed: ... real___cxa_throw".
CXX=${CXX:-c++}
LIBSTDCXX=$("$CXX" -print-file-name=libstdc++.so)
PRELOAD_ASAN="$("$CXX" -print-file-name=libasan.so) $LIBSTDCXX"
PRELOAD_TSAN="$("$CXX" -print-file-name=libtsan.so) $LIBSTDCXX"

# A fresh venv with the build and test dependencies, and the extension built into it.
#   $1: name  $2: CPPCONV_SANITIZE  $3...: more -C options for scikit-build-core
build() {
  local name=$1 sanitize=$2
  shift 2
  local venv=$WORK/$name-venv
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q numpy pytest hypothesis scikit-build-core pybind11 ninja cmake setuptools-scm
  echo "+ building the $name extension (CPPCONV_SANITIZE=$sanitize)"
  # RelWithDebInfo: pybind11 strips Release modules, and reports need the symbols.
  "$venv/bin/pip" install -q --no-build-isolation \
    -Cbuild-dir="$WORK/$name-build" \
    -Ccmake.define.CPPCONV_SANITIZE="$sanitize" \
    -Ccmake.build-type=RelWithDebInfo \
    "$@" .
}

# Runs pytest from outside the source tree (so `import cppconv` is the instrumented build).
#   $1: name  $2...: pytest arguments
run_tests() {
  local name=$1
  shift
  (cd "$WORK" && "$WORK/$name-venv/bin/python" -m pytest -q -p no:cacheprovider "$@")
}

asan() {
  # -fno-sanitize-recover=all: a UBSan report aborts instead of printing and going on.
  build asan "address;undefined" -Ccmake.define.CMAKE_CXX_FLAGS="-fno-sanitize-recover=all"
  echo "+ tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  # detect_leaks=0: LeakSanitizer reports the interpreter's and NumPy's module-lifetime
  #   allocations at exit (thousands with PYTHONMALLOC=malloc), and a suppression can only
  #   name frames, which every cppconv allocation shares with the interpreter that called it
  #   (_PyEval_EvalFrameDefault, ...): suppressing CPython would suppress cppconv too.  Leaks
  #   are tested instead by tests/test_memory.py (resident memory flat over 100,000 calls of
  #   every op), which the main test command runs.
  # allocator_may_return_null=1: the tests ask for impossible sizes on purpose; malloc must
  #   fail (NumPy then raises MemoryError) instead of ASan aborting on the size.
  # PYTHONMALLOC=malloc: Python objects come from malloc too, so ASan sees their bounds.
  # Children (the fuzzer, fork tests) inherit all of it and are checked as well.
  # Left out: test_memory.py (ASan's quarantine and shadow memory make resident sizes
  # meaningless), the timing test of test_threads.py (ASan is 2-3 times slower), and the
  # Dask and ONNX layers, Python over the same native calls the other tests make (they run
  # in the main test command; here they would double the time).  The fork-during-a-first-call
  # test skips itself here: GCC 12's ASan runtime has no fork() interceptor, so a child forked
  # while another thread is in its allocator can hang in it (ThreadSanitizer's runs it below).
  LD_PRELOAD="$PRELOAD_ASAN" \
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  PYTHONMALLOC=malloc \
    run_tests asan "$ROOT/tests" --ignore="$ROOT/tests/test_memory.py" --ignore="$ROOT/tests/test_dask.py" \
      --ignore="$ROOT/tests/test_onnx.py" -k "not test_gil_released"
}

tsan() {
  # Without OpenMP: libgomp is not built with TSan, so its barriers and thread pool are
  # invisible to it and every kernel's parallel region would be reported as a race (false
  # positives that a suppression would have to blanket).  The CMake build works without
  # OpenMP (kernels then run with one thread), and what TSan checks here is the library's
  # own shared state under concurrent Python threads, which the GIL does not protect while
  # the kernels run: per-thread scratch, plan packing under its mutex, the ISA and thread
  # settings.  The OpenMP split itself is checked by the thread-count tests (bit-identical
  # results for 1, 2 and 7 threads).
  build tsan thread -Ccmake.define.CMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON
  echo "+ multi-threaded tests under ThreadSanitizer"
  # setarch -R: gcc 12's TSan cannot map its shadow memory with the 28+ bits of mmap
  # randomisation of recent kernels ("unexpected memory mapping"); without ASLR it can.
  LD_PRELOAD="$PRELOAD_TSAN" \
  TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions="$ROOT/tools/tsan.supp" \
    setarch "$(uname -m)" -R \
    "$WORK/tsan-venv/bin/python" -c "import cppconv; assert not cppconv.info()['openmp']"
  LD_PRELOAD="$PRELOAD_TSAN" \
  TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions="$ROOT/tools/tsan.supp" \
    setarch "$(uname -m)" -R \
    bash -c "cd '$WORK' && '$WORK/tsan-venv/bin/python' -m pytest -q -p no:cacheprovider \
      '$ROOT/tests/test_concurrency.py' '$ROOT/tests/test_threads.py' -k 'not test_gil_released'"
}

case $WHICH in
  asan) asan ;;
  tsan) tsan ;;
  all)
    asan  # (a simple command each, so that set -e stops at the first failure)
    tsan
    ;;
  *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;;
esac
echo "+ sanitizers: no reports"
