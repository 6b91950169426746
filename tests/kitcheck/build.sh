#!/usr/bin/env bash
# Builds kitcheck (main.go: the deploy kit's checks with kustomize's, Kubernetes' and
# Prometheus's own Go libraries) and prints the binary's path on stdout, its only output there;
# progress goes to stderr. Like benchmarks/collector/build.sh:
#
# - The binary lives in .cache/kitcheck/<hash>/ at the repository root (git-ignored), where
#   <hash> covers every build input (the sources, go.mod, go.sum, the Go version and platform):
#   when nothing changed it is reused and nothing runs.
# - No Go: says why on stderr, nothing on stdout, exits 0 (the tests that need it then skip).
# - The build fails (no module proxy, say): says why on stderr, exits 1.
#
# A cold build downloads the modules (about 3 minutes here) and compiles them (about 1 more).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=kitcheck
build_env=(CGO_ENABLED=0 GOFLAGS=-mod=readonly) # go.mod and go.sum are committed, complete
build_flags=(-trimpath -buildvcs=false -ldflags=-s\ -w)

GO=${GO:-$(command -v go || true)}
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi
if [ -z "$GO" ] || ! "$GO" version >/dev/null 2>&1; then
    echo "build.sh: no Go here: no kitcheck binary; the tests that need it are skipped" >&2
    exit 0
fi

inputs_hash() {
    {
        "$GO" version
        "$GO" env GOOS GOARCH GOAMD64
        echo "${build_env[*]} ${build_flags[*]}"
        cd "$here"
        for file in go.mod go.sum *.go; do
            echo "== $file"
            cat "$file"
        done
    } | sha256sum | cut -c1-16
}

cache=${KITCHECK_CACHE_DIR:-$repo/.cache/kitcheck}
hash=$(inputs_hash)
binary=$cache/$hash/$name
if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi
mkdir -p "$cache/$hash"
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
if ! (cd "$here" && env "${build_env[@]}" "$GO" build "${build_flags[@]}" -o "$partial" .) >&2; then
    rm -f "$partial"
    echo "build.sh: the kitcheck build failed (see above): no binary" >&2
    exit 1
fi
mv "$partial" "$binary"
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$hash" -exec rm -rf {} + 2>/dev/null || true
echo "build.sh: built in $(($(date +%s) - start))s: $binary" >&2
echo "$binary"
