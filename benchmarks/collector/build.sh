#!/usr/bin/env bash
# Builds the small OpenTelemetry Collector distribution of src/ (see README.md) and prints the
# path of the binary on stdout, its only output there; progress goes to stderr.
#
# - The binary lives in .cache/otelcol/<hash>/ at the repository root (git-ignored), where
#   <hash> covers every build input (src/, the flags below, the Go version and platform): when
#   nothing changed it is reused and nothing runs.
# - No Go: prints why on stderr, nothing on stdout, exits 0 (the collector tests then skip).
# - The build fails (no module proxy, say): prints why on stderr, exits 1.
#
# Environment: GO (the go command; default `go` on PATH, else /usr/local/go/bin/go),
# OTELCOL_CACHE_DIR (default <repo>/.cache/otelcol).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=otelcol-agent-sampler
# How the binary is built; part of the inputs' hash with src/, the Go version and platform.
build_env=(CGO_ENABLED=0 GOFLAGS=-mod=readonly) # go.mod and go.sum are committed, complete
build_flags=(-trimpath -buildvcs=false -ldflags=-s\ -w)

GO=${GO:-$(command -v go || true)}
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi
if [ -z "$GO" ] || ! "$GO" version >/dev/null 2>&1; then
    echo "build.sh: no Go here (\`go\` not on PATH nor /usr/local/go/bin/go, or GO=${GO:-} does" \
        "not run): no collector binary; the tests that need it are skipped" >&2
    exit 0
fi

inputs_hash() {
    {
        "$GO" version
        "$GO" env GOOS GOARCH GOAMD64
        echo "${build_env[*]} ${build_flags[*]}"
        cd "$here"
        for file in src/go.mod src/go.sum src/*.go; do
            echo "== $file"
            cat "$file"
        done
    } | sha256sum | cut -c1-16
}

cache=${OTELCOL_CACHE_DIR:-$repo/.cache/otelcol}
hash=$(inputs_hash)
binary=$cache/$hash/$name
if [ -x "$binary" ]; then
    echo "build.sh: up to date: $binary" >&2
    echo "$binary"
    exit 0
fi

mkdir -p "$cache/$hash"
# One build at a time (two test sessions may start together); the second reuses the first's.
exec 9>"$cache/$hash/.lock"
if command -v flock >/dev/null; then
    flock 9
fi
if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi

echo "build.sh: building $name with $("$GO" version) (first build: minutes)..." >&2
start=$(date +%s)
partial=$cache/$hash/$name.partial.$$
if ! (cd "$here/src" && env "${build_env[@]}" "$GO" build "${build_flags[@]}" -o "$partial" .) >&2
then
    rm -f "$partial"
    echo "build.sh: the collector build failed (see above): no binary" >&2
    exit 1
fi
mv "$partial" "$binary"
# Binaries of earlier inputs are not used again.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$hash" -exec rm -rf {} + 2>/dev/null || true
echo "build.sh: built in $(($(date +%s) - start))s: $binary" >&2
echo "$binary"
