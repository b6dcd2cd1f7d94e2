#!/usr/bin/env bash
#
# bench-fleet.sh: a CI fleet on one bucket, simulated on one machine.
#
# What it simulates
#   A real module whose tests read testdata files (by default
#   golang.org/x/mod at BENCH_FLEET_VERSION, fetched once through the module
#   proxy that `go env GOPROXY` names) is made into a git repository. Every
#   worker is a fresh `git clone` of it at one path (as CI checks out),
#   followed by `go-cache-plugin canonical-mtimes`, with an empty
#   --cache-dir and an empty GOCACHE; all workers share one bucket on a
#   private MinIO. The job kinds (BENCH_FLEET_KINDS) are
#
#       build   go build ./...
#       test    go test -short ./...
#       race    go test -race -short ./...
#       vet     go vet ./...
#
#   For each kind, in this order:
#     1. a seed worker runs the job against the empty prefix: it fills the
#        bucket and writes the kind's manifest. All seeds run first, so a
#        kind whose manifest another kind could overwrite is caught;
#     2. a cold worker runs it again, once per delay (BENCH_FLEET_DELAYS:
#        0 for loopback, 20ms through scripts/bench-latency, which adds the
#        delay to every S3 request), each through its own bench-latency
#        instance so that its S3 requests are counted;
#     3. the go command's own cache, warm (one untimed run, then a timed
#        one, on a fresh clone after canonical-mtimes): the baseline.
#   After each cold worker, two floors of what it did: the job again with
#   the plugin on the cold worker's now complete --cache-dir (no bucket)
#   and an empty GOCACHE, and a plain `cp -r` of that directory into a new
#   one (the cost of putting those bytes and files on this machine's
#   disk, with nothing fetched or checked).
#
# What it reports (a Markdown table on stdout), per kind and delay:
#   - the first worker's time (empty bucket), the cold worker's wall time,
#     and the cold worker's ratio to the warm local time;
#   - of the test packages that passed ("ok" lines), how many were
#     "(cached)" on the cold worker;
#   - the two floors: the plugin's warm directory, and cp -r of it;
#   - the bytes the cold worker prefetched, used and wasted (--metrics);
#   - its S3 requests (counted by bench-latency) and bytes down and up.
#
# How to run (from anywhere; it builds the plugin from this repository):
#
#   scripts/bench-fleet.sh
#   BENCH_FLEET_KINDS="build race" BENCH_FLEET_DELAYS=20ms scripts/bench-fleet.sh
#
# Settings: BENCH_FLEET_MODULE (golang.org/x/mod), BENCH_FLEET_VERSION
# (v0.20.0), BENCH_FLEET_KINDS ("build test race vet"), BENCH_FLEET_DELAYS
# ("0 20ms"), BENCH_WORKDIR (scratch directory, kept; default a temporary
# one, removed at exit unless BENCH_KEEP=1).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="${BENCH_FLEET_MODULE:-golang.org/x/mod}"
version="${BENCH_FLEET_VERSION:-v0.20.0}"
kinds="${BENCH_FLEET_KINDS:-build test race vet}"
delays="${BENCH_FLEET_DELAYS:-0 20ms}"

log() { printf '%s\n' "bench-fleet: $*" >&2; }
die() { log "$*"; exit 1; }
command -v curl >/dev/null || die "needs curl"
command -v git >/dev/null || die "needs git"

if [[ -n "${BENCH_WORKDIR:-}" ]]; then
    mkdir -p "$BENCH_WORKDIR"
    work="$(cd "$BENCH_WORKDIR" && pwd)"
    keep=1
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/bench-fleet.XXXXXX")"
    keep="${BENCH_KEEP:-0}"
fi
minio_pid=""
lat_pid=""
cleanup() {
    local status=$?
    for pid in $lat_pid $minio_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$keep" == 1 ]]; then log "scratch directory kept: $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/bin" "$work/logs" "$work/dirs"
log "scratch directory: $work"

# ---------------------------------------------------------------- tools

plugin="$work/bin/go-cache-plugin"
(cd "$repo" && go build -o "$plugin" ./cmd/go-cache-plugin && go build -o "$work/bin/bench-latency" ./scripts/bench-latency)
rev="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"

# ---------------------------------------------------------------- the module

goproxy="$(go env GOPROXY)"
gomodcache="$(go env GOMODCACHE)"
gosumdb="$(go env GOSUMDB)"
export GOTOOLCHAIN=local GOWORK=off GOENV=off GOFLAGS=-mod=mod GOMODCACHE="$gomodcache" GOSUMDB="$gosumdb"
unset GOCACHEPROG
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
export GIT_CONFIG_NOSYSTEM=1

log "fetching $module@$version"
src="$work/src"
if [[ ! -d "$src/.git" ]]; then
    dir="$(cd "$work" && GOPROXY="$goproxy" GOFLAGS= go mod download -json "$module@$version" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "$dir" ]] || die "go mod download $module@$version gave no directory"
    rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
    (cd "$src" && GOPROXY="$goproxy" GOCACHE="$work/dirs/setup-gocache" go mod download &&
        git init -q && git add -A && git commit -qm "$module@$version") >"$work/logs/setup.log" 2>&1 ||
        { cat "$work/logs/setup.log" >&2; die "could not set up $src"; }
fi
export GOPROXY=off
ntracked="$(git -C "$src" ls-files | wc -l | tr -d ' ')"
ntestdata="$(git -C "$src" ls-files | grep -c /testdata/ || true)"

# ---------------------------------------------------------------- MinIO

export AWS_ACCESS_KEY_ID=benchuser AWS_SECRET_ACCESS_KEY=benchpassword AWS_REGION=us-east-1
bucket=fleet
# shellcheck source=lib/minio.sh
source "$repo/scripts/lib/minio.sh"
start_minio "$work/minio-data" "$work/logs/minio.log" "$bucket" || die "MinIO did not start"
log "MinIO ($minio_version) on $s3_endpoint"
prefix="fleet-$(date +%Y%m%d%H%M%S)"

# ---------------------------------------------------------------- one job

checkout="$work/checkout" # every worker checks out here, as CI does

job_args() { # kind
    case $1 in
    build) echo "build ./..." ;;
    test) echo "test -short ./..." ;;
    race) echo "test -race -short ./..." ;;
    vet) echo "vet ./..." ;;
    *) die "unknown job kind $1" ;;
    esac
}

now() { date +%s.%N; }

# fresh_checkout: a new clone at $checkout with canonical times.
fresh_checkout() {
    rm -rf "$checkout"
    git clone -q "$src" "$checkout"
    (cd "$checkout" && "$plugin" canonical-mtimes >>"$work/logs/mtimes.log")
}

# run_job KIND LOGNAME GOCACHE [GOCACHEPROG]: runs the job in $checkout and
# sets last_time (seconds).
run_job() {
    local kind=$1 logf="$work/logs/$2.log" gocache=$3 prog=${4:-} t0 t1 status=0
    mkdir -p "$gocache"
    t0="$(now)"
    # shellcheck disable=SC2046 # the job's words
    (cd "$checkout" && GOCACHE="$gocache" GOCACHEPROG="$prog" go $(job_args "$kind")) >"$logf" 2>&1 || status=$?
    t1="$(now)"
    ((status == 0)) || { tail -n 30 "$logf" >&2; die "job $kind ($2) failed"; }
    last_time="$(calc "$t1 - $t0")"
}

# metric LOG KEY: the last value of KEY=<n> in the plugin's --metrics lines.
metric() {
    grep -o "[[:space:]]$2=[0-9]*" "$1" | tail -n 1 | cut -d= -f2 || true
}

plugin_prog() { # cache-dir endpoint
    echo "$plugin --cache-dir=$1 --bucket=$bucket --s3-endpoint-url=$2 --s3-path-style --prefix=$prefix --metrics"
}

calc() { awk "BEGIN { print $1 }"; }                  # calc EXPR
mb() { awk -v n="${1:-0}" 'BEGIN { printf "%.1f", n / 1e6 }'; }

# ---------------------------------------------------------------- the fleet

rows=()
declare -A seed
for kind in $kinds; do
    log "seed worker: $kind"
    fresh_checkout
    run_job "$kind" "seed-$kind" "$work/dirs/seed-$kind-gocache" "$(plugin_prog "$work/dirs/seed-$kind" "$s3_endpoint")"
    seed[$kind]=$last_time
    log "  $(printf '%.1f' "$last_time")s"
done

declare -A warm
for kind in $kinds; do
    log "warm local (the go command's own cache): $kind"
    fresh_checkout
    run_job "$kind" "warmup-$kind" "$work/dirs/warm-$kind-gocache"
    run_job "$kind" "warm-$kind" "$work/dirs/warm-$kind-gocache"
    warm[$kind]=$last_time
done

for delay in $delays; do
    for kind in $kinds; do
        tag="$kind-${delay}"
        log "cold worker: $kind, $delay per S3 request"
        "$work/bin/bench-latency" -target="$s3_endpoint" -delay="$delay" >"$work/logs/lat-$tag.url" 2>"$work/logs/lat-$tag.log" &
        lat_pid=$!
        for _ in $(seq 1 100); do [[ -s "$work/logs/lat-$tag.url" ]] && break; sleep 0.05; done
        lat_url="$(head -n 1 "$work/logs/lat-$tag.url")"
        [[ -n "$lat_url" ]] || die "bench-latency did not start"
        fresh_checkout
        run_job "$kind" "cold-$tag" "$work/dirs/cold-$tag-gocache" "$(plugin_prog "$work/dirs/cold-$tag" "$lat_url")"
        kill "$lat_pid" && wait "$lat_pid" 2>/dev/null || true
        lat_pid=""
        requests="$(sed -n 's/^bench-latency: \([0-9]*\) requests$/\1/p' "$work/logs/lat-$tag.log")"
        cold_time=$last_time
        run_job "$kind" "pwarm-$tag" "$work/dirs/pwarm-$tag-gocache" "$plugin --cache-dir=$work/dirs/cold-$tag"
        pwarm_time=$last_time
        t0="$(now)"
        cp -r "$work/dirs/cold-$tag" "$work/dirs/copy-$tag"
        copy_time="$(calc "$(now) - $t0")"
        last_time=$cold_time
        logf="$work/logs/cold-$tag.log"
        ok="$(grep -c '^ok ' "$logf" || true)"
        cached="$(grep -c '^ok .*(cached)' "$logf" || true)"
        tests="-"
        [[ "$kind" == test || "$kind" == race ]] && tests="$cached of $ok"
        pf="$(metric "$logf" prefetched_bytes)"
        used="$(metric "$logf" prefetch_used_bytes)"
        wasted="$(metric "$logf" prefetch_wasted_bytes)"
        pct="-"
        ((${pf:-0} > 0)) && pct="$(awk -v u="${used:-0}" -v p="$pf" 'BEGIN { printf "%.1f%%", 100 * u / p }')"
        ratio="$(awk -v a="$last_time" -v b="${warm[$kind]}" 'BEGIN { printf "%.2f", a / b }')"
        rows+=("| $kind | $delay | $(printf '%.1f' "${seed[$kind]}") | $(printf '%.2f' "$last_time") | $(printf '%.2f' "${warm[$kind]}") | $ratio | $(printf '%.2f' "$pwarm_time") | $(printf '%.2f' "$copy_time") | $tests | $(mb "$pf") | $(mb "$used") | $(mb "$wasted") | $pct | ${requests:-?} | $(mb "$(metric "$logf" bytes_down)") | $(mb "$(metric "$logf" bytes_up)") |")
        log "  ${rows[-1]}"
    done
done

cat <<EOF

## Fleet: $module@$version ($ntracked tracked files, $ntestdata under testdata/)

Plugin built from $rev; $(go version | cut -d' ' -f3-); $(nproc) cores; MinIO $minio_version on loopback.
Each row is one cold worker: a fresh clone, canonical-mtimes, an empty --cache-dir and
GOCACHE, the bucket filled by one earlier worker of each job kind ("first worker": that
worker's time, on loopback, with an empty bucket). "warm" is the go command's own warm
cache on a fresh clone of the same commit; "plugin warm" the job with the plugin on the
cold worker's complete directory (no bucket), "cp -r" a copy of that directory.

| job | S3 delay | first worker (s) | cold worker (s) | warm local (s) | cold/warm | plugin warm (s) | cp -r (s) | tests cached | prefetched MB | used MB | wasted MB | used | S3 requests | MB down | MB up |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
printf '%s\n' "${rows[@]}"
