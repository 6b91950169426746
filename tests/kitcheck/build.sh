#!/usr/bin/env bash
# Builds kitcheck (main.go: the deploy kit's checks with kustomize's, Kubernetes' and
# Prometheus's own Go libraries) and prints the binary's path on stdout, its only output there;
# progress goes to stderr. Cached in .cache/kitcheck/<hash>/ at the repository root like the
# collector (scripts/go_build.sh): reused while no build input changes; without Go this prints
# why and exits 0 (the tests that need it then skip); a failed build exits 1. A cold build
# downloads the modules (about 3 minutes here) and compiles them (about 1 more).
#
# Environment: GO (the go command), KITCHECK_CACHE_DIR (default <repo>/.cache/kitcheck).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
exec bash "$repo/scripts/go_build.sh" kitcheck "$here" "${KITCHECK_CACHE_DIR:-$repo/.cache/kitcheck}"
