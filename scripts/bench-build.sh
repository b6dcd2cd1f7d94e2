#!/usr/bin/env bash
#
# bench-build.sh: whole-build benchmark of go-cache-plugin against the go
# command's own build cache, on a real, sizeable module.
#
# What it builds
#   By default golang.org/x/tools/gopls at a pinned version (BENCH_VERSION),
#   fetched once through the module proxy that `go env GOPROXY` names, into a
#   scratch module ("go mod init bench && go get gopls@version"). Every timed
#   build is then
#
#       go build -o /dev/null golang.org/x/tools/gopls
#
#   run offline (GOPROXY=off, GOFLAGS=-mod=mod, GOTOOLCHAIN=local,
#   GOWORK=off, GOENV=off): the gopls binary with every package it imports
#   (standard library included: 715 packages at v0.23.0), compiled and linked.
#   Test-only packages are not built. The link step is never cached by
#   "go build -o", so it is part of every time, warm or cold, in both
#   configurations alike.
#
# What it measures (one run, configurations alternated round by round, the
# order flipped every round, so that the noise of a shared 2-core machine
# falls on both sides alike). Each configuration has a private GOCACHE (and
# the plugin a private --cache-dir); nothing is shared between them.
#
#   A. Warm rebuild: the plugin with a fully warm --cache-dir, against the
#      go command's own warm GOCACHE (no GOCACHEPROG). BENCH_WARM_ROUNDS
#      rounds (default 7), after one untimed warm-up build of each.
#      Target: median of the per-round ratios plugin/go <= 1.02.
#   B. Cold first build: an empty --cache-dir against an empty GOCACHE.
#      BENCH_COLD_ROUNDS rounds (default 3). Target: ratio <= 1.03.
#      The plugin's peak RSS is recorded too.
#   C. Only with an S3 endpoint (see below), the plugin with --bucket:
#      C2. First build ever: empty --cache-dir and a fresh, empty --prefix
#          in the bucket, against go's own cold build (BENCH_S3_COLD_ROUNDS,
#          default BENCH_COLD_ROUNDS). Includes draining the uploads at exit.
#      C3. The plugin's peak RSS during those first builds.
#      C1. Empty --cache-dir and a warm bucket (the prefix the last C2 round
#          filled) against the same plugin with a fully warm --cache-dir,
#          and against go's own warm GOCACHE (BENCH_S3_ROUNDS rounds,
#          default 5, the three orders rotated).
#
#   Peak RSS is the kernel's ru_maxrss of the plugin process, read by the
#   small helper scripts/bench-rss (the plugin is started through it, as the
#   first word of GOCACHEPROG), which also gives the plugin's own CPU time.
#   It wraps the plugin in the cold builds (B, C2) and in the untimed
#   warm-up of A, not in A's timed runs. Times are wall-clock, from
#   date +%s.%N.
#
# How to run (from anywhere; it builds the plugin from this repository):
#
#   scripts/bench-build.sh                       # A and B
#   BENCH_S3=1 scripts/bench-build.sh            # A, B and C on a private
#                                                # MinIO it starts and stops
#   BENCH_WARM_ROUNDS=1 BENCH_COLD_ROUNDS=1 BENCH_S3_ROUNDS=1 \
#       BENCH_S3=1 scripts/bench-build.sh        # quick smoke run
#
#   The full default run (with C) took 32 minutes on a busy 2-core machine: a cold
#   build of gopls is 1.5 to 5 minutes there, and B and C2 do 2*3 each.
#
# Settings (environment variables):
#   BENCH_MODULE          module to fetch        (golang.org/x/tools/gopls)
#   BENCH_VERSION         its version            (v0.23.0)
#   BENCH_TARGET          package(s) to build    ($BENCH_MODULE)
#   BENCH_SECTIONS        letters of the sections to run (AB, plus C when
#                         an S3 endpoint is given)
#   BENCH_WARM_ROUNDS     rounds of A            (7)
#   BENCH_COLD_ROUNDS     rounds of B            (3)
#   BENCH_S3_COLD_ROUNDS  rounds of C2           ($BENCH_COLD_ROUNDS)
#   BENCH_S3_ROUNDS       rounds of C1           (5)
#   BENCH_PREFETCH_FLAGS  extra plugin flags of D's prefetching builds
#                         (none; e.g. --prefetch=64)
#   BENCH_PREFETCH_ROUNDS rounds of D            (3; D is run only when
#                         BENCH_SECTIONS names it: see the D section)
#   BENCH_S3_LATENCY      delay D adds to every S3 request (20ms)
#   BENCH_S3_RATE         bandwidth limit of D's delayed S3 responses, in
#                         bytes per second (none; e.g. 12.5M: a number with
#                         an optional k, M or G suffix, 1000-based)
#   BENCH_PLUGIN          a prebuilt plugin binary to use instead of
#                         building ./cmd/go-cache-plugin
#   BENCH_PLUGIN_FLAGS    extra flags for every plugin run
#   BENCH_WORKDIR         scratch directory (default: a new temporary one,
#                         removed at exit unless BENCH_KEEP=1). A directory
#                         kept from an earlier run can be given again: A then
#                         reuses its warm caches (BENCH_SECTIONS=A re-measures
#                         warm rebuilds without any cold build); B and C
#                         always start from empty caches.
#   BENCH_OUT             also write the markdown summary to this file
#   S3 (section C), either
#     BENCH_S3=1          start a private MinIO on 127.0.0.1 (binary from
#                         scripts/install-minio.sh, which builds it if
#                         needed), with its own bucket; killed at exit
#   or an existing endpoint and bucket:
#     BENCH_S3_ENDPOINT   e.g. http://127.0.0.1:9000 (path-style requests)
#     BENCH_S3_BUCKET     an existing bucket; each run writes under a fresh
#                         prefix bench-<run id>/..., left in place
#     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#
# The go command runs with GOENV=off, so that a GOCACHEPROG or GOFLAGS set
# with "go env -w" cannot leak into a configuration; GOPROXY, GOMODCACHE and
# the checksum settings are read from "go env" first and passed on.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

module="${BENCH_MODULE:-golang.org/x/tools/gopls}"
version="${BENCH_VERSION:-v0.23.0}"
target="${BENCH_TARGET:-$module}"
warm_rounds="${BENCH_WARM_ROUNDS:-7}"
cold_rounds="${BENCH_COLD_ROUNDS:-3}"
s3_cold_rounds="${BENCH_S3_COLD_ROUNDS:-$cold_rounds}"
s3_rounds="${BENCH_S3_ROUNDS:-5}"
plugin_flags="${BENCH_PLUGIN_FLAGS:-}"

s3_endpoint="${BENCH_S3_ENDPOINT:-}"
s3_bucket="${BENCH_S3_BUCKET:-}"
have_s3=0
if [[ "${BENCH_S3:-0}" == 1 || -n "$s3_endpoint" ]]; then
    have_s3=1
fi
default_sections=AB
((have_s3)) && default_sections=ABC
sections="${BENCH_SECTIONS:-$default_sections}"
if [[ "$sections" == *[CD]* ]] && ! ((have_s3)); then
    echo "bench-build: sections C and D need BENCH_S3=1 or BENCH_S3_ENDPOINT/BENCH_S3_BUCKET" >&2
    exit 2
fi
if [[ -n "$s3_endpoint" && -z "$s3_bucket" ]]; then
    echo "bench-build: BENCH_S3_ENDPOINT needs BENCH_S3_BUCKET" >&2
    exit 2
fi

log() { printf '%s\n' "bench-build: $*" >&2; }
die() { log "$*"; exit 1; }

run_start=$SECONDS
run_id="$(date +%Y%m%d%H%M%S)-$$"

# ---------------------------------------------------------------- scratch dir

if [[ -n "${BENCH_WORKDIR:-}" ]]; then
    work="$BENCH_WORKDIR"
    mkdir -p "$work"
    work="$(cd "$work" && pwd)"
    keep=1
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/bench-build.XXXXXX")"
    keep="${BENCH_KEEP:-0}"
fi
[[ "$work" != *[[:space:]]* ]] || die "the scratch directory must have no spaces: $work"
minio_pid=""
lat_pid=""
cleanup() {
    local status=$?
    if [[ -n "$lat_pid" ]]; then
        kill "$lat_pid" 2>/dev/null || true
        wait "$lat_pid" 2>/dev/null || true
    fi
    if [[ -n "$minio_pid" ]]; then
        kill "$minio_pid" 2>/dev/null || true
        wait "$minio_pid" 2>/dev/null || true
    fi
    if [[ "$keep" == 1 ]]; then
        log "scratch directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/bin" "$work/logs" "$work/mod" "$work/dirs"
log "scratch directory: $work"

# ---------------------------------------------------------------- go settings

# Read the settings that matter before turning the go env file off.
goproxy="$(go env GOPROXY)"
gomodcache="$(go env GOMODCACHE)"
gosumdb="$(go env GOSUMDB)"
gonosumdb="$(go env GONOSUMDB)"
goprivate="$(go env GOPRIVATE)"
gonoproxy="$(go env GONOPROXY)"
goversion="$(go env GOVERSION)"
[[ "$goproxy" != off ]] || die "go env GOPROXY is off: cannot fetch $module"

# ---------------------------------------------------------------- tools

if [[ -n "${BENCH_PLUGIN:-}" ]]; then
    plugin="$(cd "$(dirname "$BENCH_PLUGIN")" && pwd)/$(basename "$BENCH_PLUGIN")"
    [[ -x "$plugin" ]] || die "BENCH_PLUGIN is not executable: $plugin"
    plugin_desc="$plugin (prebuilt)"
else
    plugin="$work/bin/go-cache-plugin"
    log "building the plugin from $repo"
    (cd "$repo" && go build -o "$plugin" ./cmd/go-cache-plugin)
    rev="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$repo" status --porcelain 2>/dev/null | wc -l | tr -d ' ')"
    plugin_desc="built from $rev"
    [[ "$dirty" == 0 ]] || plugin_desc+=" + $dirty uncommitted changes"
fi
rss="$work/bin/bench-rss"
(cd "$repo" && go build -o "$rss" ./scripts/bench-rss)

# ---------------------------------------------------------------- module setup

export GOTOOLCHAIN=local GOWORK=off GOENV=off GOFLAGS=-mod=mod
export GOMODCACHE="$gomodcache" GOSUMDB="$gosumdb" GONOSUMDB="$gonosumdb"
export GOPRIVATE="$goprivate" GONOPROXY="$gonoproxy"
unset GOCACHEPROG

cd "$work/mod"
log "fetching $module@$version"
(
    export GOPROXY="$goproxy" GOCACHE="$work/dirs/setup-gocache"
    # A reused BENCH_WORKDIR keeps its module.
    [[ -f go.mod ]] || go mod init bench >/dev/null 2>&1
    go get "$module@$version" >"$work/logs/setup.log" 2>&1 ||
        { cat "$work/logs/setup.log" >&2; exit 1; }
    go mod download >>"$work/logs/setup.log" 2>&1
)
export GOPROXY=off
# Everything the build needs must be there now, with the network off.
GOCACHE="$work/dirs/setup-gocache" go list -deps "$target" >"$work/logs/deps.txt" ||
    die "$target does not resolve offline"
npkgs="$(wc -l <"$work/logs/deps.txt" | tr -d ' ')"
rm -rf "$work/dirs/setup-gocache"
log "$target: $npkgs packages (with the standard library)"

# ---------------------------------------------------------------- S3 (MinIO)

s3_desc=""
if ((have_s3)); then
    if [[ -z "$s3_endpoint" ]]; then
        command -v curl >/dev/null || die "BENCH_S3=1 needs curl"
        log "starting MinIO (scripts/install-minio.sh builds it if needed)"
        export AWS_ACCESS_KEY_ID=benchuser AWS_SECRET_ACCESS_KEY=benchpassword
        s3_bucket=bench
        # shellcheck source=lib/minio.sh
        source "$repo/scripts/lib/minio.sh"
        start_minio "$work/minio-data" "$work/logs/minio.log" "$s3_bucket" || die "MinIO did not start"
        s3_desc="private MinIO ($minio_version) on $s3_endpoint, data on the same disk"
        log "MinIO pid $minio_pid on $s3_endpoint, bucket $s3_bucket"
    else
        [[ -n "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]] ||
            die "BENCH_S3_ENDPOINT needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        s3_desc="$s3_endpoint, bucket $s3_bucket, prefixes bench-$run_id/..."
    fi
fi
s3_flags() { # prefix
    printf '%s' "--bucket=$s3_bucket --s3-endpoint-url=$s3_endpoint --s3-path-style --prefix=bench-$run_id/$1"
}

# ---------------------------------------------------------------- one build

now() { date +%s.%N; }
last_time=""  # seconds of the last build
last_stats="" # the plugin's metrics of the last build, condensed
odd_notes=()  # anything unexpected, for the summary

# build NAME LOGNAME GOCACHE [GOCACHEPROG]: one timed build; sets last_time.
build() {
    local name=$1 logf="$work/logs/$2.log" gocache=$3 prog=${4:-}
    mkdir -p "$gocache"
    local t0 t1 status=0
    t0="$(now)"
    GOCACHE="$gocache" GOCACHEPROG="$prog" go build -o /dev/null $target >"$logf" 2>&1 || status=$?
    t1="$(now)"
    if ((status != 0)); then
        tail -n 40 "$logf" >&2
        die "$name: go build failed (status $status), log $logf"
    fi
    last_time="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    last_stats=""
    if [[ -n "$prog" ]]; then
        local g s
        g="$(grep -o 'gets=.*' "$logf" | tail -n 1 || true)"
        s="$(grep -o 'store .*' "$logf" | tail -n 1 || true)"
        [[ -n "$g" ]] || odd_notes+=("$name: no --metrics summary in the build's stderr ($logf)")
        last_stats="$g"
        # Remote-tier figures that are worth seeing per run.
        local k
        for k in local_misses remote_hits remote_misses remote_errors remote_skipped corrupt_local corrupt_remote uploads uploads_found upload_errors uploads_dropped upload_queue bytes_up breaker; do
            local v
            v="$(grep -o "[[:space:]]$k=[^ ]*" <<<"$s" | tail -n 1 | tr -d ' ' || true)"
            [[ -n "$v" ]] && last_stats+=" $v"
        done
        # Any other line of the plugin's is worth a look.
        local other
        other="$(grep 'go-cache-plugin:' "$logf" | grep -v -e 'gets=' -e 'store local_hits=' -e 'prefetch manifest=' || true)"
        if [[ -n "$other" ]]; then
            odd_notes+=("$name: plugin said: $(head -n 3 <<<"$other" | tr '\n' '|')")
        fi
    fi
    # Anything else on stderr is unexpected for a clean build.
    local extra
    extra="$(grep -v 'go-cache-plugin:' "$logf" || true)"
    if [[ -n "$extra" ]]; then
        odd_notes+=("$name: go build printed: $(head -n 3 <<<"$extra" | tr '\n' '|')")
    fi
}

# plugin_prog DIR [RSSFILE] [EXTRA FLAGS...]: the GOCACHEPROG value.
plugin_prog() {
    local dir=$1 rssf=${2:-}
    shift 2 || shift $#
    local p="$plugin --cache-dir=$dir --metrics $plugin_flags $*"
    [[ -z "$rssf" ]] || p="$rss $rssf $p"
    printf '%s' "$p"
}

# last_rss FILE: the peak RSS in MiB recorded last in FILE.
last_rss() {
    local kib
    kib="$(grep -o 'maxrss_kib=[0-9-]*' "$1" | tail -n 1 | cut -d= -f2)"
    awk -v k="$kib" 'BEGIN { printf "%.0f", k / 1024 }'
}

# last_cpu FILE: the plugin's user+system CPU seconds recorded last in FILE.
last_cpu() {
    tail -n 1 "$1" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%.2f", v["user_s"] + v["sys_s"] }'
}

# proc_cpu PID: the user+system CPU seconds of a running process so far.
proc_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

fresh() { # DIR...: empty directories
    rm -rf "$@"
    mkdir -p "$@"
}

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { # ratio target
    awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t) ? "met" : "**missed**" }'
}
join() { local IFS=' '; echo "$*"; }

summary_rows=()
detail_lines=()

# ---------------------------------------------------------------- B: cold

b_plugin=() b_go=() b_ratio=() b_rss=() b_cpu=()
if [[ "$sections" == *B* ]]; then
    log "B: cold first build, $cold_rounds rounds"
    for ((i = 1; i <= cold_rounds; i++)); do
        pd="$work/dirs/B-plugin-$i" pg="$work/dirs/B-plugin-gocache-$i" gg="$work/dirs/B-go-gocache-$i"
        fresh "$pd" "$pg" "$gg"
        rssf="$work/logs/B-rss-$i.txt"
        : >"$rssf"
        for side in $( ((i % 2)) && echo "plugin go" || echo "go plugin"); do
            if [[ $side == plugin ]]; then
                build "B plugin #$i" "B-plugin-$i" "$pg" "$(plugin_prog "$pd" "$rssf")"
                b_plugin+=("$last_time")
                b_rss+=("$(last_rss "$rssf")")
                b_cpu+=("$(last_cpu "$rssf")")
                log "B $i/$cold_rounds plugin ${last_time}s rss=${b_rss[-1]}MiB $last_stats"
            else
                build "B go #$i" "B-go-$i" "$gg"
                b_go+=("$last_time")
                log "B $i/$cold_rounds go     ${last_time}s"
            fi
        done
        b_ratio+=("$(ratio "${b_plugin[-1]}" "${b_go[-1]}")")
        if ((i == cold_rounds)); then
            detail_lines+=("B: cache size after a cold build: plugin --cache-dir $(du -sh "$pd" | cut -f1), go GOCACHE $(du -sh "$gg" | cut -f1)")
            # Keep the last round's caches as the warm ones of A.
            rm -rf "$work/dirs/A-plugin" "$work/dirs/A-plugin-gocache" "$work/dirs/A-go-gocache"
            mv "$pd" "$work/dirs/A-plugin"
            mv "$pg" "$work/dirs/A-plugin-gocache"
            mv "$gg" "$work/dirs/A-go-gocache"
        else
            rm -rf "$pd" "$pg" "$gg"
        fi
    done
    mp="$(median "${b_plugin[@]}")" mg="$(median "${b_go[@]}")" mr="$(median "${b_ratio[@]}")"
    summary_rows+=("| B. cold first build | empty --cache-dir | $(join "${b_plugin[@]}") | $mp | $mr (ratio of medians $(ratio "$mp" "$mg")) | <= 1.03: $(verdict "$mr" 1.03) |")
    summary_rows+=("| B. cold first build | go, empty GOCACHE | $(join "${b_go[@]}") | $mg | | |")
    detail_lines+=("B: plugin peak RSS per cold local build (MiB): $(join "${b_rss[@]}"); plugin CPU (user+sys s): $(join "${b_cpu[@]}")")
fi

# ---------------------------------------------------------------- A: warm

a_plugin=() a_go=() a_ratio=()
if [[ "$sections" == *A* ]]; then
    pd="$work/dirs/A-plugin" pg="$work/dirs/A-plugin-gocache" gg="$work/dirs/A-go-gocache"
    if [[ ! -d "$pd" ]]; then
        log "A: filling the caches (untimed cold builds)"
        fresh "$pd" "$pg" "$gg"
        build "A fill plugin" A-fill-plugin "$pg" "$(plugin_prog "$pd")"
        build "A fill go" A-fill-go "$gg"
    fi
    log "A: warm-up builds (untimed)"
    # The warm-up goes through bench-rss, for the plugin's own CPU time;
    # the timed runs start the plugin directly.
    rssf="$work/logs/A-warmup-rss.txt"
    : >"$rssf"
    build "A warm-up plugin" A-warmup-plugin "$pg" "$(plugin_prog "$pd" "$rssf")"
    a_cpu="$(last_cpu "$rssf")"
    log "A warm-up plugin ${last_time}s cpu=${a_cpu}s $last_stats"
    build "A warm-up go" A-warmup-go "$gg"
    log "A warm-up go     ${last_time}s"
    log "A: warm rebuild, $warm_rounds rounds"
    for ((i = 1; i <= warm_rounds; i++)); do
        for side in $( ((i % 2)) && echo "plugin go" || echo "go plugin"); do
            if [[ $side == plugin ]]; then
                build "A plugin #$i" "A-plugin-$i" "$pg" "$(plugin_prog "$pd")"
                a_plugin+=("$last_time")
                log "A $i/$warm_rounds plugin ${last_time}s $last_stats"
                a_stats="$last_stats"
            else
                build "A go #$i" "A-go-$i" "$gg"
                a_go+=("$last_time")
                log "A $i/$warm_rounds go     ${last_time}s"
            fi
        done
        a_ratio+=("$(ratio "${a_plugin[-1]}" "${a_go[-1]}")")
    done
    mp="$(median "${a_plugin[@]}")" mg="$(median "${a_go[@]}")" mr="$(median "${a_ratio[@]}")"
    summary_rows=("| A. warm rebuild | warm --cache-dir | $(join "${a_plugin[@]}") | $mp | $mr (ratio of medians $(ratio "$mp" "$mg")) | <= 1.02: $(verdict "$mr" 1.02) |"
        "| A. warm rebuild | go, warm GOCACHE | $(join "${a_go[@]}") | $mg | | |"
        "${summary_rows[@]}")
    detail_lines+=("A: per-round ratios plugin/go: $(join "${a_ratio[@]}")")
    detail_lines+=("A: plugin metrics of a warm rebuild: $a_stats")
    detail_lines+=("A: the plugin's own CPU time (user+sys) in the untimed warm-up rebuild: ${a_cpu}s")
fi

# ---------------------------------------------------------------- C: S3

if [[ "$sections" == *C* ]]; then
    c2_plugin=() c2_go=() c2_ratio=() c2_rss=() c2_cpu=()
    log "C2: first build ever (empty dir, empty bucket prefix), $s3_cold_rounds rounds"
    for ((i = 1; i <= s3_cold_rounds; i++)); do
        pd="$work/dirs/C2-plugin-$i" pg="$work/dirs/C2-plugin-gocache-$i" gg="$work/dirs/C2-go-gocache-$i"
        fresh "$pd" "$pg" "$gg"
        rssf="$work/logs/C2-rss-$i.txt"
        : >"$rssf"
        for side in $( ((i % 2)) && echo "plugin go" || echo "go plugin"); do
            if [[ $side == plugin ]]; then
                build "C2 plugin #$i" "C2-plugin-$i" "$pg" "$(plugin_prog "$pd" "$rssf" $(s3_flags "c2-$i"))"
                c2_plugin+=("$last_time")
                c2_rss+=("$(last_rss "$rssf")")
                c2_cpu+=("$(last_cpu "$rssf")")
                log "C2 $i/$s3_cold_rounds plugin ${last_time}s rss=${c2_rss[-1]}MiB $last_stats"
                c2_stats="$last_stats"
            else
                build "C2 go #$i" "C2-go-$i" "$gg"
                c2_go+=("$last_time")
                log "C2 $i/$s3_cold_rounds go     ${last_time}s"
            fi
        done
        c2_ratio+=("$(ratio "${c2_plugin[-1]}" "${c2_go[-1]}")")
        if ((i == s3_cold_rounds)); then
            warm_prefix="c2-$i"
            rm -rf "$work/dirs/C1-plugin" "$work/dirs/C1-plugin-gocache" "$work/dirs/C1-go-gocache"
            mv "$pd" "$work/dirs/C1-plugin"
            mv "$pg" "$work/dirs/C1-plugin-gocache"
            mv "$gg" "$work/dirs/C1-go-gocache"
        else
            rm -rf "$pd" "$pg" "$gg"
        fi
    done

    c1_empty=() c1_warm=() c1_go=() c1_r_warm=() c1_r_go=()
    wd="$work/dirs/C1-plugin" wg="$work/dirs/C1-plugin-gocache" gg="$work/dirs/C1-go-gocache"
    log "C1: warm-up builds (untimed)"
    build "C1 warm-up plugin" C1-warmup-plugin "$wg" "$(plugin_prog "$wd" "" $(s3_flags "$warm_prefix"))"
    log "C1 warm-up plugin ${last_time}s $last_stats"
    build "C1 warm-up go" C1-warmup-go "$gg"
    log "C1: empty --cache-dir + warm bucket, $s3_rounds rounds"
    for ((i = 1; i <= s3_rounds; i++)); do
        ed="$work/dirs/C1-empty-$i" eg="$work/dirs/C1-empty-gocache-$i"
        fresh "$ed" "$eg"
        case $((i % 3)) in
        1) order="empty warm go" ;;
        2) order="warm go empty" ;;
        0) order="go empty warm" ;;
        esac
        for side in $order; do
            case $side in
            empty)
                build "C1 empty-dir #$i" "C1-empty-$i" "$eg" "$(plugin_prog "$ed" "" $(s3_flags "$warm_prefix"))"
                c1_empty+=("$last_time")
                c1_stats="$last_stats"
                log "C1 $i/$s3_rounds empty-dir ${last_time}s $last_stats"
                ;;
            warm)
                build "C1 warm-dir #$i" "C1-warm-$i" "$wg" "$(plugin_prog "$wd" "" $(s3_flags "$warm_prefix"))"
                c1_warm+=("$last_time")
                log "C1 $i/$s3_rounds warm-dir  ${last_time}s $last_stats"
                ;;
            go)
                build "C1 go #$i" "C1-go-$i" "$gg"
                c1_go+=("$last_time")
                log "C1 $i/$s3_rounds go        ${last_time}s"
                ;;
            esac
        done
        c1_r_warm+=("$(ratio "${c1_empty[-1]}" "${c1_warm[-1]}")")
        c1_r_go+=("$(ratio "${c1_empty[-1]}" "${c1_go[-1]}")")
        rm -rf "$ed" "$eg"
    done

    me="$(median "${c1_empty[@]}")" mw="$(median "${c1_warm[@]}")" mg="$(median "${c1_go[@]}")"
    summary_rows+=("| C1. empty dir + warm bucket | empty --cache-dir, warm bucket | $(join "${c1_empty[@]}") | $me | $(median "${c1_r_warm[@]}") vs warm dir; $(median "${c1_r_go[@]}") vs go warm | |")
    summary_rows+=("| C1. empty dir + warm bucket | warm --cache-dir, same bucket | $(join "${c1_warm[@]}") | $mw | | |")
    summary_rows+=("| C1. empty dir + warm bucket | go, warm GOCACHE | $(join "${c1_go[@]}") | $mg | | |")
    mp="$(median "${c2_plugin[@]}")" mg="$(median "${c2_go[@]}")"
    summary_rows+=("| C2. first build ever | empty --cache-dir, empty bucket prefix | $(join "${c2_plugin[@]}") | $mp | $(median "${c2_ratio[@]}") (ratio of medians $(ratio "$mp" "$mg")) | |")
    summary_rows+=("| C2. first build ever | go, empty GOCACHE | $(join "${c2_go[@]}") | $mg | | |")
    max_rss="$(printf '%s\n' "${c2_rss[@]}" | sort -g | tail -n 1)"
    summary_rows+=("| C3. plugin peak RSS, first build ever | MiB per run | $(join "${c2_rss[@]}") | $(median "${c2_rss[@]}") | max $max_rss MiB | |")
    detail_lines+=("C1: per-round ratios empty-dir/warm-dir: $(join "${c1_r_warm[@]}"); empty-dir/go-warm: $(join "${c1_r_go[@]}")")
    detail_lines+=("C1: plugin metrics of an empty-dir build: $c1_stats")
    detail_lines+=("C2: per-round ratios plugin/go: $(join "${c2_ratio[@]}"); plugin CPU (user+sys s): $(join "${c2_cpu[@]}")")
    detail_lines+=("C2: plugin metrics of a first build: $c2_stats")
    detail_lines+=("C: bucket: $s3_desc")
fi

# ---------------------------------------------------------------- D: prefetch

# D. Only with an S3 endpoint, and only when asked (BENCH_SECTIONS=D):
#    a cold worker with a manifest. After an untimed fill (a cold build into
#    a private --cache-dir and an empty bucket prefix, which writes the
#    manifest, then one untimed empty-dir build), each round builds
#      warm: the fully warm --cache-dir (same bucket flags),
#      pf:   an empty --cache-dir, prefetching from the manifest (default),
#      od:   an empty --cache-dir with --prefetch=0 (on demand only),
#    straight against the bucket and through scripts/bench-latency adding
#    BENCH_S3_LATENCY (default 20ms) to every request, and, when
#    BENCH_S3_RATE is set, limiting all its response bodies together to
#    that many bytes per second (a slow link). BENCH_PREFETCH_ROUNDS
#    rounds (default 3), the order rotated. Targets: pf/warm <= 1.3, and
#    <= 1.6 with the latency.
d_rounds="${BENCH_PREFETCH_ROUNDS:-3}"
if [[ "$sections" == *D* ]]; then
    d_latency="${BENCH_S3_LATENCY:-20ms}"
    lat_bin="$work/bin/bench-latency"
    (cd "$repo" && go build -o "$lat_bin" ./scripts/bench-latency)
    d_rate="${BENCH_S3_RATE:-}"
    "$lat_bin" -target="$s3_endpoint" -delay="$d_latency" ${d_rate:+-rate="$d_rate"} >"$work/logs/latency.url" 2>"$work/logs/latency.log" &
    lat_pid=$!
    for _ in $(seq 1 100); do
        [[ -s "$work/logs/latency.url" ]] && break
        sleep 0.1
    done
    lat_endpoint="$(head -n 1 "$work/logs/latency.url")"
    [[ "$lat_endpoint" == http://* ]] || die "bench-latency did not start"
    d_flags() { # ENDPOINT
        printf '%s' "--bucket=$s3_bucket --s3-endpoint-url=$1 --s3-path-style --prefix=bench-$run_id/d"
    }
    d_prefetch() { # LOGNAME: the prefetch figures of a build
        grep -o 'prefetch manifest=.*' "$work/logs/$1.log" | tail -n 1 |
            grep -o -e 'prefetched=[0-9]*' -e 'prefetched_bytes=[0-9]*' -e 'prefetch_used=[0-9]*' \
                -e 'prefetch_wasted_bytes=[0-9]*' -e 'prefetch_waited=[0-9]*' | tr '\n' ' ' || true
    }
    wd="$work/dirs/D-warm" wg="$work/dirs/D-warm-gocache"
    fresh "$wd" "$wg"
    log "D: filling the bucket (untimed cold build)"
    build "D fill" D-fill "$wg" "$(plugin_prog "$wd" "" $(d_flags "$s3_endpoint"))"
    log "D fill ${last_time}s $last_stats"
    # The empty directories of the cold builds are made in d_cold, which
    # has the ext4 "top of directory hierarchy" attribute (chattr +T): the
    # kernel then places each of them in a block group of its own, as on
    # a fresh worker, not beside the earlier rounds' files. Without it, on
    # the journal-less ext4 of the machines here, every inode the build
    # allocates costs a scan of the inodes near it that were freed in the
    # last minute, and the earlier rounds' files fill the groups near the
    # parent: each cold round was slower than the last (3,000 files in a
    # directory took 0.1 s under d_cold, 2.7 s beside 3,000 just deleted,
    # and the ratio of a cold build was 1.58 beside 51 kept cold
    # directories, 1.23 after they were removed). Elsewhere chattr fails
    # and the directories are plain ones.
    d_cold="$work/dirs/D-cold"
    # A reused BENCH_WORKDIR holds an earlier run's cold directories, of
    # the same names: remove them now, long before the timed builds.
    rm -rf "$d_cold"
    mkdir -p "$d_cold"
    chattr +T "$d_cold" 2>/dev/null || log "D: chattr +T $d_cold failed; cold directories placed by default"
    ed="$d_cold/D-empty" eg="$d_cold/D-empty-gocache"
    fresh "$ed" "$eg"
    build "D warm-up" D-warmup "$eg" "$(plugin_prog "$ed" "" $(d_flags "$s3_endpoint"))"
    log "D warm-up empty-dir ${last_time}s $last_stats $(d_prefetch D-warmup)"
    declare -A d_times=() d_cpu=()
    d_r_pf=() d_r_od=() d_r_pf_lat=() d_r_od_lat=()
    for ((i = 1; i <= d_rounds; i++)); do
        case $((i % 3)) in
        1) order="warm pf od" ;;
        2) order="pf od warm" ;;
        0) order="od warm pf" ;;
        esac
        for lat in 0 1; do
            ep="$s3_endpoint" tag=""
            ((lat)) && ep="$lat_endpoint" tag="-lat"
            for side in $order; do
                name="D-$side$tag-$i"
                # CPU seconds spent during the build by the plugin, MinIO
                # and the latency proxy, all on the same cores as the go
                # command. (The go command's own tree is not counted: it
                # does not always wait for the plugin, so the plugin's time
                # may or may not be in it.)
                rssf="$work/logs/$name.rss"
                # Write back what the last build wrote, so that it does
                # not fall on this one.
                sync
                m0="$(proc_cpu "$minio_pid")" l0="$(proc_cpu "$lat_pid")"
                case $side in
                warm) build "$name" "$name" "$wg" "$(plugin_prog "$wd" "$rssf" $(d_flags "$ep"))" ;;
                pf | od)
                    # A new empty directory each time, in d_cold (see
                    # there), the used ones kept until the end of the run.
                    ed="$d_cold/$name" eg="$d_cold/$name-gocache"
                    [[ ! -e "$ed" && ! -e "$eg" ]] || die "D: cold directory $ed is not new"
                    mkdir -p "$ed" "$eg"
                    extra="${BENCH_PREFETCH_FLAGS:-}"
                    [[ $side == od ]] && extra="--prefetch=0"
                    build "$name" "$name" "$eg" "$(plugin_prog "$ed" "$rssf" $(d_flags "$ep") $extra)"
                    ;;
                esac
                cpu="$(awk -v p="$(last_cpu "$rssf")" \
                    -v m0="$m0" -v m1="$(proc_cpu "$minio_pid")" -v l0="$l0" -v l1="$(proc_cpu "$lat_pid")" \
                    'BEGIN { printf "cpu: plugin=%.2fs minio=%.2fs latency-proxy=%.2fs", p, m1 - m0, l1 - l0 }')"
                d_cpu[$side$tag]+="$cpu; "
                d_times[$side$tag]+="$last_time "
                log "$name ${last_time}s $cpu $last_stats $(d_prefetch "$name")"
                [[ $side != pf ]] || d_stats[$lat]="$last_stats $(d_prefetch "$name")"
            done
            w="$(awk '{ print $NF }' <<<"${d_times[warm$tag]}")"
            p="$(awk '{ print $NF }' <<<"${d_times[pf$tag]}")"
            o="$(awk '{ print $NF }' <<<"${d_times[od$tag]}")"
            if ((lat)); then
                d_r_pf_lat+=("$(ratio "$p" "$w")") d_r_od_lat+=("$(ratio "$o" "$w")")
            else
                d_r_pf+=("$(ratio "$p" "$w")") d_r_od+=("$(ratio "$o" "$w")")
            fi
        done
    done
    for tag in "" -lat; do
        what="loopback MinIO"
        [[ -z "$tag" ]] || what="MinIO + $d_latency per request${d_rate:+, $d_rate bytes/s}"
        # shellcheck disable=SC2086
        mw="$(median ${d_times[warm$tag]})" mp="$(median ${d_times[pf$tag]})" mo="$(median ${d_times[od$tag]})"
        if [[ -z "$tag" ]]; then rp=("${d_r_pf[@]}") ro=("${d_r_od[@]}") d_target=1.3; else rp=("${d_r_pf_lat[@]}") ro=("${d_r_od_lat[@]}") d_target=1.6; fi
        mr="$(median "${rp[@]}")"
        summary_rows+=("| D. cold worker, $what | empty --cache-dir, prefetch | ${d_times[pf$tag]}| $mp | $mr vs warm dir | <= $d_target: $(verdict "$mr" "$d_target") |")
        summary_rows+=("| D. cold worker, $what | empty --cache-dir, --prefetch=0 | ${d_times[od$tag]}| $mo | $(median "${ro[@]}") vs warm dir | |")
        summary_rows+=("| D. cold worker, $what | warm --cache-dir | ${d_times[warm$tag]}| $mw | | |")
        detail_lines+=("D$tag: per-round ratios prefetch/warm: $(join "${rp[@]}"); on-demand/warm: $(join "${ro[@]}")")
        for side in warm pf od; do
            detail_lines+=("D$tag $side, CPU per round: ${d_cpu[$side$tag]}")
        done
    done
    detail_lines+=("D: plugin metrics of a prefetching build: ${d_stats[0]:-}")
    detail_lines+=("D-lat: plugin metrics of a prefetching build: ${d_stats[1]:-}")
    kill "$lat_pid" 2>/dev/null || true
    wait "$lat_pid" 2>/dev/null || true
    lat_pid=""
fi

# ---------------------------------------------------------------- summary

elapsed=$((SECONDS - run_start))
{
    echo "### go-cache-plugin build benchmark"
    echo
    echo "- build: \`go build -o /dev/null $target\` in a scratch module requiring $module@$version ($npkgs packages with std), offline"
    echo "- go: $goversion, $(nproc) cores, load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- plugin: $plugin_desc${plugin_flags:+, flags $plugin_flags}"
    rounds=()
    [[ "$sections" != *A* ]] || rounds+=("A $warm_rounds")
    [[ "$sections" != *B* ]] || rounds+=("B $cold_rounds")
    [[ "$sections" != *C* ]] || rounds+=("C2 $s3_cold_rounds" "C1 $s3_rounds")
    [[ "$sections" != *D* ]] || rounds+=("D $d_rounds")
    echo "- rounds: $(IFS=,; echo "${rounds[*]}" | sed 's/,/, /g'); configurations alternated, order flipped each round"
    echo "- ratio: median of the per-round ratios plugin/go (same round, back to back)"
    echo "- wall time of the whole run: ${elapsed}s"
    echo
    echo "| Section | Configuration | Runs (s) | Median (s) | Ratio | Target |"
    echo "| --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${summary_rows[@]}"
    echo
    for l in "${detail_lines[@]}"; do echo "- $l"; done
    if ((${#odd_notes[@]})); then
        echo
        echo "Unexpected output:"
        printf -- '- %s\n' "${odd_notes[@]}"
    fi
} >"$work/summary.md"
cat "$work/summary.md"
if [[ -n "${BENCH_OUT:-}" ]]; then
    cp "$work/summary.md" "$BENCH_OUT"
fi
