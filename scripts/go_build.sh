#!/usr/bin/env bash
# go_build.sh NAME SOURCE_DIR CACHE_DIR: builds the Go module in SOURCE_DIR into
# CACHE_DIR/<hash>/NAME and prints the binary's path on stdout, its only output there; progress
# goes to stderr. What benchmarks/collector/build.sh and tests/kitcheck/build.sh run.
#
# - <hash> covers every build input (SOURCE_DIR's go.mod, go.sum and *.go, the flags below,
#   the Go version and platform): when nothing changed the binary is reused and nothing runs.
# - No Go: says why on stderr, nothing on stdout, exits 0 (the tests that need it then skip).
# - The build fails (no module proxy, say): says why on stderr, exits 1.
#
# Environment: GO (the go command; default `go` on PATH, else /usr/local/go/bin/go).
set -euo pipefail
name=$1
source_dir=$(cd "$2" && pwd)
cache=$3
# How the binary is built; part of the inputs' hash.
build_env=(CGO_ENABLED=0 GOFLAGS=-mod=readonly) # go.mod and go.sum are committed, complete
build_flags=(-trimpath -buildvcs=false -ldflags=-s\ -w)

GO=${GO:-$(command -v go || true)}
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi
if [ -z "$GO" ] || ! "$GO" version >/dev/null 2>&1; then
    echo "go_build.sh: no Go here (\`go\` not on PATH nor /usr/local/go/bin/go, or GO=${GO:-}" \
        "does not run): no $name binary; the tests that need it are skipped" >&2
    exit 0
fi

inputs_hash() {
    {
        "$GO" version
        "$GO" env GOOS GOARCH GOAMD64
        echo "${build_env[*]} ${build_flags[*]}"
        cd "$source_dir"
        for file in go.mod go.sum *.go; do
            echo "== $file"
            cat "$file"
        done
    } | sha256sum | cut -c1-16
}

hash=$(inputs_hash)
binary=$cache/$hash/$name
if [ -x "$binary" ]; then
    echo "go_build.sh: up to date: $binary" >&2
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

echo "go_build.sh: building $name with $("$GO" version) (first build: minutes)..." >&2
start=$(date +%s)
partial=$cache/$hash/$name.partial.$$
if ! (cd "$source_dir" && env "${build_env[@]}" "$GO" build "${build_flags[@]}" -o "$partial" .) >&2
then
    rm -f "$partial"
    echo "go_build.sh: the $name build failed (see above): no binary" >&2
    exit 1
fi
mv "$partial" "$binary"
# Binaries of earlier inputs are not used again.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$hash" -exec rm -rf {} + 2>/dev/null || true
echo "go_build.sh: built in $(($(date +%s) - start))s: $binary" >&2
echo "$binary"
