#!/usr/bin/env bash
# Formats the C++ (clang-format, .clang-format) and applies ruff's fixes to the Python (ruff's
# settings: [tool.ruff] in pyproject.toml), or with --check changes nothing and fails when a C++
# file is not formatted or ruff finds anything (CI: .ci/run).
#
#     tools/format.sh            # format
#     tools/format.sh --check    # check only
#
# The tools are pinned here and installed from PyPI into .venv-format/ on first use, so every
# machine formats alike.  Python is checked, not reformatted: `ruff format` would rewrite about
# 1,900 lines of the tree's hand-wrapped style (9 % of the Python) into its own.
set -euo pipefail
CLANG_FORMAT_VERSION=23.1.5
RUFF_VERSION=0.17.6

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
venv=.venv-format
if ! "$venv/bin/clang-format" --version 2>/dev/null | grep -Fq "version $CLANG_FORMAT_VERSION" ||
   ! "$venv/bin/ruff" --version 2>/dev/null | grep -Fxq "ruff $RUFF_VERSION"; then
  echo "+ installing clang-format $CLANG_FORMAT_VERSION and ruff $RUFF_VERSION into $venv"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q "clang-format==$CLANG_FORMAT_VERSION" "ruff==$RUFF_VERSION"
fi

status=0
if ((check)); then
  echo "+ clang-format --dry-run --Werror (C++)"
  git ls-files -z '*.cpp' '*.h' | xargs -0 "$venv/bin/clang-format" --dry-run --Werror || status=1
  echo "+ ruff check (Python)"
  "$venv/bin/ruff" check . || status=1
  if ((status)); then
    echo "formatting or lint check failed: run tools/format.sh, then fix what ruff still reports" >&2
  fi
else
  git ls-files -z '*.cpp' '*.h' | xargs -0 "$venv/bin/clang-format" -i
  "$venv/bin/ruff" check --fix . || status=1
fi
exit "$status"
