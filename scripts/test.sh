#!/usr/bin/env bash
# Set up and run every check: lint, types, the whole suite on the compiled core, then the
# whole suite again on the pure-Python twins (FASTGW_NO_EXTENSIONS=1). Starts Redis on
# 127.0.0.1:6379 when none answers there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/redis.sh   # the redis state backend's tests run against a real Redis
. .venv/bin/activate
.venv/bin/python -c 'from fastgw._core import sse; assert sse.COMPILED, "compiled core did not build"'
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy --strict"; mypy --strict
echo "== pytest (compiled core)"
python -m pytest -q -p no:cacheprovider
echo "== pytest (pure-Python core: FASTGW_NO_EXTENSIONS=1)"
FASTGW_NO_EXTENSIONS=1 python -m pytest -q -p no:cacheprovider tests
