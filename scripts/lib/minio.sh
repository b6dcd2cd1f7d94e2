# shellcheck shell=bash
# Sourced by the benchmark scripts: starts a private MinIO server on a free
# loopback port, for benchmarks that need an S3 endpoint.
#
#   start_minio DATADIR LOGFILE BUCKET
#
# finds (or builds) MinIO with scripts/install-minio.sh, starts it on
# DATADIR (emptied first) with the credentials in AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, waits until it answers, creates BUCKET and sets
# minio_pid and s3_endpoint. It needs curl. The caller stops the server
# (kill "$minio_pid") when done. It returns non-zero if the server does
# not come up.

start_minio() {
    local data=$1 logf=$2 bucket=$3 repo minio port
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    minio="$(bash "$repo/scripts/install-minio.sh" | tail -n 1)"
    [[ -x "$minio" ]] || { echo "start_minio: no MinIO binary: $minio" >&2; return 1; }
    minio_pid=""
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue # taken
        fi
        rm -rf "$data" && mkdir -p "$data"
        MINIO_ROOT_USER="$AWS_ACCESS_KEY_ID" MINIO_ROOT_PASSWORD="$AWS_SECRET_ACCESS_KEY" \
            MINIO_BROWSER=off \
            "$minio" server --quiet --address "127.0.0.1:$port" \
            --console-address "127.0.0.1:$((port + 1))" \
            "$data" >"$logf" 2>&1 &
        minio_pid=$!
        for _ in $(seq 1 100); do
            if curl -sf "http://127.0.0.1:$port/minio/health/live" >/dev/null 2>&1; then
                break
            fi
            kill -0 "$minio_pid" 2>/dev/null || break
            sleep 0.2
        done
        if curl -sf "http://127.0.0.1:$port/minio/health/live" >/dev/null 2>&1; then
            break
        fi
        kill "$minio_pid" 2>/dev/null || true
        wait "$minio_pid" 2>/dev/null || true
        minio_pid=""
    done
    if [[ -z "$minio_pid" ]]; then
        cat "$logf" >&2
        echo "start_minio: MinIO did not start" >&2
        return 1
    fi
    s3_endpoint="http://127.0.0.1:$port"
    minio_version="$(basename "$(dirname "$minio")")"
    curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -X PUT "$s3_endpoint/$bucket" >/dev/null ||
        { echo "start_minio: could not create bucket $bucket" >&2; return 1; }
}
