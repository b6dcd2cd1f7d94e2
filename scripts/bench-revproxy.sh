#!/usr/bin/env bash
#
# bench-revproxy.sh: the reverse proxy's benchmarks, through the built
# binary, against the hermetic test origin (no network needed beyond
# loopback; npm must be on PATH).
#
#   BenchmarkRevProxyCachedHTTPS  a cached 100 MiB file fetched over HTTPS
#                                 through the daemon (CONNECT, TLS terminated
#                                 by the daemon): throughput, and the daemon's
#                                 peak RSS (VmHWM) afterwards.
#   BenchmarkRevProxyNpm          "npm install" of a project of 300 generated
#                                 packages with an empty npm cache, alternately
#                                 straight from the local test origin and
#                                 through the warm daemon; reports seconds per
#                                 install of each and the ratio proxy/direct.
#
# Usage: scripts/bench-revproxy.sh [extra go test flags]
# BENCH_HTTPS_N (default 20) and BENCH_NPM_N (default 3) set the iterations.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -run '^$' -bench 'RevProxyCachedHTTPS' -benchtime="${BENCH_HTTPS_N:-20}x" "$@" ./cmd/go-cache-plugin/
go test -count=1 -run '^$' -bench 'RevProxyNpm' -benchtime="${BENCH_NPM_N:-3}x" -timeout=30m "$@" ./cmd/go-cache-plugin/
