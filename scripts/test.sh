#!/usr/bin/env bash
# Installs agent-tail-sampler with its test dependencies into ./.venv (building the native core,
# native/, with cargo), then runs the linters, the type checker, the import map's check
# (lint-imports) and the whole test suite:
# the native core's (cargo fmt, clippy, cargo test), then Python's, unit and end-to-end.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

(
    cd native
    cargo fmt --check
    cargo clippy --all-targets --locked -- -D warnings
    cargo clippy --all-targets --locked --features python -- -D warnings
    cargo test --locked --quiet
)

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# A real redis-server (Debian's package) for the cluster's tests (tests/unit/cluster,
# tests/e2e/collector/test_cluster.py): installed once, without questions; the tests fail
# without it rather than skip.
if ! command -v redis-server >/dev/null; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        sudo=(sudo -n)
    fi
    echo "installing redis-server (apt-get) for the cluster tests" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends redis-server </dev/null >&2
fi

.venv/bin/ruff check sampler tests benchmarks deploy
.venv/bin/ruff format --check sampler tests benchmarks deploy
.venv/bin/mypy
# The map of docs/architecture.md: layers imported one way, no cycle in any package
# (pyproject.toml, tool.importlinter).
.venv/bin/lint-imports --no-cache --no-logo
# A real OpenTelemetry Collector built from Go modules, for tests/e2e/collector (a cold build
# takes about 5 minutes; later runs reuse the cached binary). Without Go those tests skip.
bash benchmarks/collector/build.sh >/dev/null ||
    echo "collector build failed: tests/e2e/collector will be skipped" >&2
# The deploy kit's checks with kustomize's, Kubernetes' and Prometheus's Go libraries, for
# tests/e2e/deploy (a cold build takes a few minutes; later runs reuse the cached binary).
bash tests/kitcheck/build.sh >/dev/null ||
    echo "kitcheck build failed: tests/e2e/deploy will be skipped" >&2

.venv/bin/python -m pytest "$@"
