#!/usr/bin/env bash
#
# bench-modproxy.sh: whole-graph download benchmark of the module proxy.
#
# What it measures
#   "go mod download all" of this repository's own module graph into an
#   empty GOMODCACHE (and an empty GOPATH), timed, in three ways:
#
#     direct  straight from the upstream: the first http(s) entry of
#             "go env GOPROXY" (never a hard-coded host)
#     warm    through "go-cache-plugin serve --modproxy" whose cache already
#             holds the graph (one untimed warm-up download first)
#     cold    through a daemon with an empty cache directory, started for
#             the round: the cost of fetching, verifying against the
#             checksum database and caching, over direct
#
#   and, as the floor (the go command's own work: extracting and hashing),
#
#     file    from a GOPROXY=file:// copy of the graph's download cache
#
#   BENCH_ROUNDS rounds (default 3); in each, direct, warm and cold run in
#   an order rotated round by round, so that the noise of a shared machine
#   falls on all of them. The figures are the median times and the medians
#   of the per-round ratios warm/direct and cold/direct.
#
#   go.sum is present, so the go command checks every file against it and
#   does not consult the checksum database; the proxy does (through the
#   upstream's /sumdb/ path) on its cold fills.
#
# Usage: scripts/bench-modproxy.sh          (from anywhere in the repository)
# Needs: go, curl, network access to the upstream.
set -euo pipefail

rounds=${BENCH_ROUNDS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-modproxy.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	chmod -R u+w "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

die() { echo "bench-modproxy: $*" >&2; exit 1; }

cd "$root"
upstream=$(go env GOPROXY | tr ',|' '\n\n' | grep -E '^https?://' | head -n1 || true)
[ -n "$upstream" ] || die "go env GOPROXY has no http(s) proxy"
sumdb=$(go env GOSUMDB | cut -d+ -f1 | cut -d' ' -f1)
first=$(go list -m -f '{{if not .Main}}{{.Path}}{{end}}' all | sed -n '/./{p;q}')
curl -fsS -o /dev/null --max-time 20 "$upstream/$first/@v/list" || die "upstream $upstream does not answer"
if [ "$sumdb" != off ]; then
	curl -fsS -o /dev/null --max-time 20 "$upstream/sumdb/$sumdb/supported" || die "upstream $upstream does not proxy the checksum database $sumdb"
fi
echo "upstream: $upstream (checksum database: $sumdb)"
echo "graph: $(go list -m all | wc -l) modules; $(nproc) CPUs; rounds: $rounds"

bin=$work/go-cache-plugin
go build -o "$bin" ./cmd/go-cache-plugin

# The downloads run in a copy of the committed tree: "go mod download all"
# records missing checksums in go.sum, which must not touch the checkout.
src=$work/src
mkdir -p "$src"
git -C "$root" archive HEAD | tar -x -C "$src"
cd "$src"

# start_daemon <cache-dir> <log>: starts a module proxy, sets $url and $pid.
start_daemon() {
	"$bin" serve --cache-dir="$1" --http=127.0.0.1:0 --modproxy --modproxy-upstream="$upstream" >"$2" 2>&1 &
	pid=$!
	pids+=("$pid")
	url=
	for _ in $(seq 100); do
		url=$(sed -n 's|.*serving HTTP on \(http://[^ ]*\)/$|\1|p' "$2")
		[ -n "$url" ] && break
		kill -0 "$pid" 2>/dev/null || { cat "$2" >&2; die "daemon exited"; }
		sleep 0.1
	done
	[ -n "$url" ] || { cat "$2" >&2; die "daemon did not start"; }
}

stop_daemon() {
	kill "$1"
	wait "$1" 2>/dev/null || true
}

n=0
# download <GOPROXY>: prints the seconds "go mod download all" took.
download() {
	n=$((n + 1))
	local gp=$work/gopath.$n
	[ "${2:-}" = keep ] && gp=$work/gopath.keep
	local t0=$EPOCHREALTIME
	env GOPROXY="$1" GOPATH="$gp" GOMODCACHE="$gp/pkg/mod" GOFLAGS=-modcacherw \
		GOTOOLCHAIN=local GOWORK=off GOCACHEPROG= \
		go mod download all >"$work/out.$n" 2>&1 || { cat "$work/out.$n" >&2; die "go mod download through $1 failed"; }
	local t1=$EPOCHREALTIME
	[ "${2:-}" = keep ] || rm -rf "$gp"
	echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
}

start_daemon "$work/warm-cache" "$work/warm.log"
warm_url=$url/mod
warm_pid=$pid
echo "warming the proxy..."
echo "  warm-up (cold) download: $(download "$warm_url" keep)s"
floor_url=file://$work/gopath.keep/pkg/mod/cache/download

declare -a direct warm cold file
for r in $(seq "$rounds"); do
	order=(direct warm cold file)
	rot=$(((r - 1) % 4))
	order=("${order[@]:rot}" "${order[@]:0:rot}")
	for what in "${order[@]}"; do
		case $what in
		direct) direct+=("$(download "$upstream")") ;;
		file) file+=("$(download "$floor_url")") ;;
		warm) warm+=("$(download "$warm_url")") ;;
		cold)
			start_daemon "$work/cold-cache.$r" "$work/cold.$r.log"
			cold+=("$(download "$url/mod")")
			stop_daemon "$pid"
			rm -rf "$work/cold-cache.$r"
			;;
		esac
	done
	echo "round $r: direct ${direct[-1]}s  warm ${warm[-1]}s  cold ${cold[-1]}s  file ${file[-1]}s"
done
stop_daemon "$warm_pid"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratios() {
	local -n num=$1 den=$2
	for i in "${!num[@]}"; do awk -v a="${num[$i]}" -v b="${den[$i]}" 'BEGIN {printf "%.3f\n", a / b}'; done
}
echo
echo "median times: direct $(median "${direct[@]}")s  warm $(median "${warm[@]}")s  cold $(median "${cold[@]}")s  file (floor) $(median "${file[@]}")s"
echo "median ratio warm/direct: $(median $(ratios warm direct))"
echo "median ratio cold/direct: $(median $(ratios cold direct))"
echo "median ratio warm/file:   $(median $(ratios warm file))"
