#!/usr/bin/env bash
#
# Install a pinned build of the MinIO server, used by tests that need a real
# S3-compatible endpoint (see internal/s3test).
#
# The binary is built from the github.com/minio/minio Go module with
# "go install", so only the Go module proxy needs to be reachable.
# It is placed in
#
#   ${GOCACHE_PLUGIN_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/go-cache-plugin-tools}/minio-<version>/minio
#
# and the build is skipped if that file already exists. The path of the
# binary is printed as the last line of standard output.
#
# Set MINIO_VERSION to override the pinned version.
set -euo pipefail

# The pinned version. github.com/minio/minio publishes no semver tags, so this
# is the pseudo-version the module proxy resolves for a specific commit.
readonly DEFAULT_MINIO_VERSION='v0.0.0-20260212201848-7aac2a2c5b7c'
readonly version="${MINIO_VERSION:-$DEFAULT_MINIO_VERSION}"

tools="${GOCACHE_PLUGIN_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/go-cache-plugin-tools}"
bindir="${tools}/minio-${version}"
bin="${bindir}/minio"

if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$bindir"

# Several test packages may ask at once: one builds, the others wait for it.
exec 9>"${bindir}/.lock"
if command -v flock >/dev/null; then
    flock 9
    if [[ -x "$bin" ]]; then
        echo "$bin"
        exit 0
    fi
fi

# Build into a scratch directory and move the result into place, so an
# interrupted build never leaves a partial binary at the final path.
tmpdir="$(mktemp -d "${bindir}/.build.XXXXXX")"
trap 'rm -rf "$tmpdir"' EXIT

echo "install-minio: building github.com/minio/minio@${version} (this takes a few minutes)" >&2
start=$SECONDS
# "go install pkg@version" builds with the module's own go.mod, independent
# of the current module; run it from the scratch directory regardless.
(
    cd "$tmpdir"
    GOBIN="$tmpdir" go install "github.com/minio/minio@${version}"
) >&2
mv -f "${tmpdir}/minio" "$bin"
echo "install-minio: built in $((SECONDS - start))s" >&2

echo "$bin"
