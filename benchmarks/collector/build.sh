#!/usr/bin/env bash
# Builds the small OpenTelemetry Collector distribution of src/ (see README.md) and prints the
# path of the binary on stdout, its only output there; progress goes to stderr. The binary is
# cached in .cache/otelcol/<hash>/ at the repository root (git-ignored) and reused while no
# build input changes; without Go this prints why and exits 0 (the collector tests then skip);
# a failed build exits 1 (scripts/go_build.sh).
#
# Environment: GO (the go command), OTELCOL_CACHE_DIR (default <repo>/.cache/otelcol).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
exec bash "$repo/scripts/go_build.sh" otelcol-agent-sampler "$here/src" \
    "${OTELCOL_CACHE_DIR:-$repo/.cache/otelcol}"
