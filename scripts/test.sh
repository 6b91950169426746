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
.venv/bin/python -m pytest "$@"
