#!/usr/bin/env bash
# Installs agent-tail-sampler with its test dependencies into ./.venv, then runs the linters,
# the type checker and the whole test suite (unit and end-to-end). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check sampler tests benchmarks
.venv/bin/ruff format --check sampler tests benchmarks
.venv/bin/mypy
# A real OpenTelemetry Collector built from Go modules, for tests/e2e/collector (a cold build
# takes about 5 minutes; later runs reuse the cached binary). Without Go those tests skip.
bash benchmarks/collector/build.sh >/dev/null ||
    echo "collector build failed: tests/e2e/collector will be skipped" >&2

.venv/bin/python -m pytest "$@"
