#!/usr/bin/env bash
#
# bench-mtimes.sh: how long canonical-mtimes takes on a large work tree.
#
# The tree is the Go source tree, $(go env GOROOT)/src, copied and
# committed into a git repository (about 11k files). Each round makes a
# fresh shallow clone and times:
#
#   fresh   canonical-mtimes in the fresh clone (the CI case: the index
#           matches the work tree, so the blob hashes are read from it and
#           no file is read)
#   again   canonical-mtimes once more in the same clone (the index's stat
#           information is stale now, so every file is hashed)
#   plain   canonical-mtimes on a copy outside git (every file hashed)
#
# Reported: each case's wall times and median. Run from the repository.
#
#   scripts/bench-mtimes.sh              # 5 rounds
#   BENCH_ROUNDS=3 scripts/bench-mtimes.sh
set -euo pipefail

rounds="${BENCH_ROUNDS:-5}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com

go build -o "$tmp/go-cache-plugin" ./cmd/go-cache-plugin
cp -r "$(go env GOROOT)/src" "$tmp/src"
git -C "$tmp/src" init -q
git -C "$tmp/src" add -A
git -C "$tmp/src" commit -q -m src
echo "tree: $(git -C "$tmp/src" ls-files | wc -l) tracked files, $(du -sh --exclude=.git "$tmp/src" | cut -f1) ($(go env GOVERSION) src)"

# seconds CMD...: run CMD, print its wall time in seconds.
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
for ((i = 1; i <= rounds; i++)); do
    rm -rf "$tmp/clone" "$tmp/plain"
    git clone -q --depth=1 "file://$tmp/src" "$tmp/clone"
    cp -r "$tmp/clone" "$tmp/plain"
    rm -rf "$tmp/plain/.git"
    times[fresh]+="$(seconds "$tmp/go-cache-plugin" canonical-mtimes "$tmp/clone") "
    times[again]+="$(seconds "$tmp/go-cache-plugin" canonical-mtimes "$tmp/clone") "
    times[plain]+="$(seconds "$tmp/go-cache-plugin" canonical-mtimes "$tmp/plain") "
done
"$tmp/go-cache-plugin" canonical-mtimes "$tmp/clone"
for c in fresh again plain; do
    printf '%-6s median %5.3fs  (%s)\n' "$c" "$(tr ' ' '\n' <<<"${times[$c]}" | grep . | median)" "${times[$c]% }"
done
