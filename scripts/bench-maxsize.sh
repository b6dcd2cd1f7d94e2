#!/usr/bin/env bash
#
# bench-maxsize.sh: what the local tier's use recording and size bound cost
# a warm rebuild.
#
# Every timed build is "go build -o /dev/null $BENCH_TARGET" (default: gopls
# at BENCH_VERSION, set up offline-first as scripts/bench-build.sh does),
# through the plugin with one warm --cache-dir shared by all configurations
# (each has its own GOCACHE). Configurations, alternated round by round
# with the order rotated, so that the noise of a shared machine falls on all
# alike:
#
#   plain   this tree's plugin, no --max-size
#   bound   --max-size=$BENCH_MAX_SIZE (default 100GiB: nothing is evicted;
#           what is measured is the bookkeeping: the state at close)
#   touch   as bound, but every object's time is set two hours back before
#           the (timed) build, so that every hit records its use: the first
#           warm rebuild after an hour, the worst case
#   base    (BENCH_BASE=1) the plugin built from BENCH_BASE_REV (HEAD) in a
#           git worktree: before use recording existed
#
# Reported: each configuration's wall times and median, the median of the
# per-round ratios against plain, and the plugin's own CPU time (user+sys,
# from scripts/bench-rss, which starts the plugin in every configuration):
# on a busy machine the CPU time shows the plugin's cost far more steadily
# than the wall time does.
#
#   scripts/bench-maxsize.sh                       # 7 rounds
#   BENCH_ROUNDS=3 BENCH_BASE=1 scripts/bench-maxsize.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="${BENCH_MODULE:-golang.org/x/tools/gopls}"
version="${BENCH_VERSION:-v0.23.0}"
target="${BENCH_TARGET:-$module}"
rounds="${BENCH_ROUNDS:-7}"
max_size="${BENCH_MAX_SIZE:-100GiB}"
log() { printf '%s\n' "bench-maxsize: $*" >&2; }
die() { log "$*"; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-maxsize.XXXXXX")"
trap 'rm -rf "$work"; [[ -z "${wt:-}" ]] || git -C "$repo" worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
mkdir -p "$work/bin" "$work/mod" "$work/logs"

goproxy="$(go env GOPROXY)"
export GOMODCACHE="$(go env GOMODCACHE)" GOSUMDB="$(go env GOSUMDB)"
export GOTOOLCHAIN=local GOWORK=off GOENV=off GOFLAGS=-mod=mod
unset GOCACHEPROG

(cd "$repo" && go build -o "$work/bin/plugin" ./cmd/go-cache-plugin && go build -o "$work/bin/rss" ./scripts/bench-rss)
configs="plain bound touch"
if [[ "${BENCH_BASE:-0}" == 1 ]]; then
    wt="$work/base-src"
    git -C "$repo" worktree add --detach "$wt" "${BENCH_BASE_REV:-HEAD}" >/dev/null 2>&1 || die "git worktree add failed"
    (cd "$wt" && go build -o "$work/bin/base" ./cmd/go-cache-plugin)
    configs="base $configs"
fi

cd "$work/mod"
go mod init bench >/dev/null 2>&1
# Offline first: a module cache that has everything needs no network.
if ! GOPROXY=off GOCACHE="$work/setup-gocache" go get "$module@$version" >"$work/logs/setup.log" 2>&1; then
    GOPROXY="$goproxy" GOCACHE="$work/setup-gocache" go get "$module@$version" >>"$work/logs/setup.log" 2>&1 ||
        { cat "$work/logs/setup.log" >&2; die "cannot fetch $module@$version"; }
fi
export GOPROXY=off
npkgs="$(GOCACHE="$work/setup-gocache" go list -deps "$target" | wc -l | tr -d ' ')"
rm -rf "$work/setup-gocache"

dir="$work/cache-dir"
prog() { # config
    case $1 in
    base) printf '%s' "$work/bin/base --cache-dir=$dir" ;;
    plain) printf '%s' "$work/bin/plugin --cache-dir=$dir" ;;
    bound | touch) printf '%s' "$work/bin/plugin --cache-dir=$dir --max-size=$max_size" ;;
    esac
}
build() { # config logname: prints seconds; the plugin's CPU seconds go to $work/logs/$2.rss
    local t0 t1
    t0="$(date +%s.%N)"
    GOCACHE="$work/gocache-$1" GOCACHEPROG="$work/bin/rss $work/logs/$2.rss $(prog "$1")" go build -o /dev/null $target >"$work/logs/$2.log" 2>&1 ||
        { tail -n 20 "$work/logs/$2.log" >&2; die "$2: build failed"; }
    t1="$(date +%s.%N)"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

log "$target: $npkgs packages; filling $dir (a cold build)"
build plain fill >/dev/null
for c in $configs; do build "$c" "warmup-$c" >/dev/null; done

cpu() { # logname: the plugin's user+sys seconds
    tail -n 1 "$work/logs/$1.rss" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%.3f", v["user_s"] + v["sys_s"] }'
}
declare -A times cpus
read -ra order <<<"$configs"
for ((i = 1; i <= rounds; i++)); do
    for c in "${order[@]}"; do
        if [[ $c == touch ]]; then
            find "$dir/output" "$dir/action" -type f -exec touch -d '2 hours ago' {} +
        fi
        t="$(build "$c" "$c-$i")"
        times[$c]+="$t "
        cpus[$c]+="$(cpu "$c-$i") "
        log "round $i/$rounds $c ${t}s plugin cpu $(cpu "$c-$i")s"
    done
    order=("${order[@]:1}" "${order[0]}") # rotate
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "### warm rebuild: use recording and --max-size"
echo
echo "- build: \`go build -o /dev/null $target\` ($npkgs packages), offline, one warm --cache-dir"
echo "- go: $(go env GOVERSION), $(nproc) cores, load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- rounds: $rounds, configurations alternated, order rotated each round; ratio: median of per-round ratios to plain"
echo
echo "| Configuration | Wall (s) | Median | Ratio to plain | Plugin CPU (s) | Median | Ratio to plain |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
read -ra plain <<<"${times[plain]}"
read -ra plaincpu <<<"${cpus[plain]}"
for c in $configs; do
    read -ra ts <<<"${times[$c]}"
    read -ra cs <<<"${cpus[$c]}"
    ratios=() cratios=()
    for ((j = 0; j < ${#ts[@]}; j++)); do
        ratios+=("$(awk -v a="${ts[j]}" -v b="${plain[j]}" 'BEGIN { printf "%.3f", a / b }')")
        cratios+=("$(awk -v a="${cs[j]}" -v b="${plaincpu[j]}" 'BEGIN { printf "%.3f", a / b }')")
    done
    echo "| $c | ${ts[*]} | $(median "${ts[@]}") | $(median "${ratios[@]}") | ${cs[*]} | $(median "${cs[@]}") | $(median "${cratios[@]}") |"
done
grep -h 'trim' "$work"/logs/bound-*.log "$work"/logs/touch-*.log 2>/dev/null | head -n 3 || true
