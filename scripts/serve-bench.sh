#!/usr/bin/env bash
#
# serve-bench.sh: warm rebuilds through the server mode ("serve" + "connect",
# over TCP and over a Unix socket) against direct mode and against the go
# command's own cache, and the daemon's memory.
#
# What it builds
#   A snapshot of BENCH_DIR (default: this repository), "go build ./..." offline
#   (GOPROXY=off, GOFLAGS=-mod=mod, GOTOOLCHAIN=local, GOWORK=off): every
#   package compiled, nothing linked or written, so the time is the go
#   command's own work plus one cache lookup per action — the part the
#   plugin adds to.
#
# What it measures
#   1. Warm rebuild, four configurations, each with a private, fully warm
#      cache (one untimed build first): plain go (GOCACHE only), direct mode,
#      connect over TCP, connect over a Unix socket. BENCH_ROUNDS rounds
#      (default 11); the order rotates every round. Reported: the median time
#      of each, and the median of the per-round ratios to plain go.
#   2. The TCP daemon's RSS after 20 more warm builds, and its peak RSS
#      (VmHWM) over 8 concurrent builds of 8 fresh small modules (their own
#      packages compiled, the standard library from the cache).
#   Times are wall clock (date +%s.%N); memory is /proc/<pid>/status.
#
# How to run
#   scripts/serve-bench.sh                  # from anywhere; Linux only
#   BENCH_ROUNDS=3 scripts/serve-bench.sh   # quick
#   BENCH_DIR=/path/to/module scripts/serve-bench.sh
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${BENCH_ROUNDS:-11}"
target="${BENCH_DIR:-$repo}"
work="$(mktemp -d /tmp/serve-bench.XXXXXX)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

bin="$work/go-cache-plugin"
(cd "$repo" && go build -o "$bin" ./cmd/go-cache-plugin)
# Build a snapshot, so that edits made meanwhile do not turn warm builds cold.
mkdir "$work/src"
(cd "$target" && tar --exclude=.git -cf - .) | tar -C "$work/src" -xf -
target="$work/src"

export GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off
for v in $(env | grep -o '^GOCACHE_[A-Z_]*' || true); do unset "$v"; done

# Daemons: TCP on a free port, and a Unix socket.
"$bin" serve --cache-dir="$work/tcp-cache" --plugin=0 2>"$work/tcp.log" &
pids+=($!); tcp_pid=$!
"$bin" serve --cache-dir="$work/unix-cache" --plugin="$work/sock" 2>"$work/unix.log" &
pids+=($!)
for i in $(seq 100); do
	grep -q 'serving the cache-prog' "$work/tcp.log" && grep -q 'serving the cache-prog' "$work/unix.log" && break
	sleep 0.1
done
port=$(sed -n 's/.*connect \([0-9]*\)"$/\1/p' "$work/tcp.log")

# env_for CONFIG prints the environment settings of a configuration.
env_for() {
	case $1 in
	plain) echo "GOCACHE=$work/plain-gocache" ;;
	direct) echo "GOCACHE=$work/direct-gocache GOCACHEPROG=$bin --cache-dir=$work/direct-cache" ;;
	tcp) echo "GOCACHE=$work/tcp-gocache GOCACHEPROG=$bin connect $port" ;;
	unix) echo "GOCACHE=$work/unix-gocache GOCACHEPROG=$bin connect $work/sock" ;;
	esac
}

# build CONFIG DIR: one "go build ./..." in DIR; prints the seconds taken.
build() {
	local cfg=$1 dir=$2 gocache prog
	gocache=$(env_for "$cfg" | sed 's/ GOCACHEPROG=.*//; s/^GOCACHE=//')
	prog=$(env_for "$cfg" | sed -n 's/.* GOCACHEPROG=//p')
	local t0 t1
	t0=$(date +%s.%N)
	(cd "$dir" && GOCACHE="$gocache" GOCACHEPROG="$prog" go build ./... >/dev/null)
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}

configs=(plain direct tcp unix)
for c in "${configs[@]}"; do build "$c" "$target" >/dev/null; build "$c" "$target" >/dev/null; done

declare -A times
for r in $(seq 0 $((rounds - 1))); do
	for k in 0 1 2 3; do
		c=${configs[$(((r + k) % 4))]}
		times[$c]+="$(build "$c" "$target") "
	done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "Warm rebuild of ${BENCH_DIR:-$repo} (go build ./...), $rounds rounds:"
read -r -a plain <<<"${times[plain]}"
for c in "${configs[@]}"; do
	read -r -a ts <<<"${times[$c]}"
	ratios=""
	for i in "${!ts[@]}"; do ratios+="$(echo "${ts[$i]} / ${plain[$i]}" | bc -l) "; done
	printf '  %-7s median %.3fs   median ratio to plain go %.3f\n' "$c" \
		"$(echo "${times[$c]}" | median)" "$(echo "$ratios" | median)"
done

rss() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
for i in $(seq 20); do build tcp "$target" >/dev/null; done
echo "TCP daemon after 20 more warm builds: VmRSS $(rss "$tcp_pid" VmRSS) kB, VmHWM $(rss "$tcp_pid" VmHWM) kB"

for i in $(seq 0 7); do
	d="$work/mod$i"
	mkdir -p "$d/lib" "$d/cmd/hello"
	printf 'module example.com/m%d\n\ngo 1.26\n' "$i" >"$d/go.mod"
	printf 'package lib\n\nimport "fmt"\n\nfunc Greeting() string { return fmt.Sprint("module ", %d) }\n' "$i" >"$d/lib/lib.go"
	printf 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/m%d/lib"\n)\n\nfunc main() { fmt.Println(lib.Greeting()) }\n' "$i" >"$d/cmd/hello/main.go"
done
# Reset the peak so that it covers the concurrent builds only.
echo 5 >"/proc/$tcp_pid/clear_refs" 2>/dev/null || true
before=$(rss "$tcp_pid" VmRSS)
t0=$(date +%s.%N)
for i in $(seq 0 7); do build tcp "$work/mod$i" >/dev/null & done
wait_builds() { for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j" ;; esac; done; }
wait_builds
t1=$(date +%s.%N)
echo "8 concurrent builds through TCP: $(echo "$t1 - $t0" | bc)s; daemon VmRSS before $before kB, peak (VmHWM) $(rss "$tcp_pid" VmHWM) kB, after $(rss "$tcp_pid" VmRSS) kB"
