#!/usr/bin/env bash
# Set up a development environment: .venv with fastgw (editable) and its test tools, and the
# Cython core compiled in place. Idempotent; safe to run again after pulling.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip "setuptools>=77" wheel "Cython>=3.0"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
# the editable install may leave the compiled twins in a build folder: put them beside the sources
.venv/bin/python setup.py -q build_ext --inplace >/dev/null
.venv/bin/fastgw --version
