#!/usr/bin/env bash
#
# screenshot-status.sh: renders the daemon's status page in a real browser
# (headless Chromium) and saves a screenshot, so that a person can check it
# reads at a glance.
#
#   scripts/screenshot-status.sh [out.png]     # default: ./status-page.png
#
# It builds go-cache-plugin from this repository, starts "serve" on a Unix
# socket with --http on a free loopback port and a private cache directory,
# builds a small generated module through "connect" twice (cold, then warm)
# so that the page has numbers on it, checks that the page answers 200 with
# the expected fields, then runs Chromium on it.
#
# Needs: chromium (Debian: apt-get install chromium), curl. Not part of
# "go test ./...". Set CHROMIUM to use another binary.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-status-page.png}")"
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$chromium" ]; then
	echo "screenshot-status: no chromium on PATH (apt-get install chromium)" >&2
	exit 2
fi

work="$(mktemp -d /tmp/status-shot.XXXXXX)"
daemon=""
cleanup() {
	[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

bin="$work/go-cache-plugin"
(cd "$repo" && go build -o "$bin" ./cmd/go-cache-plugin)
"$bin" serve --cache-dir="$work/cache" --plugin="$work/sock" --http=127.0.0.1:0 2>"$work/log" &
daemon=$!
for _ in $(seq 100); do
	url=$(sed -n 's|.*serving HTTP on \(http://[^ ]*/\)$|\1|p' "$work/log")
	[ -n "$url" ] && break
	sleep 0.1
done
[ -n "$url" ] || { cat "$work/log" >&2; exit 1; }

mod="$work/mod"
mkdir -p "$mod"
printf 'module example.com/shot\n\ngo 1.26\n' >"$mod/go.mod"
printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("status page") }\n' >"$mod/main.go"
for _ in 1 2; do
	(cd "$mod" && GOCACHE="$work/gocache" GOCACHEPROG="$bin connect $work/sock" \
		GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off go build -o /dev/null .)
done

page="$(curl -fsS "$url")"
for want in 'hit ratio' 'bytes served' 'id="uptime"' 'id="version"' 'Remote tier' 'Sessions'; do
	grep -q "$want" <<<"$page" || { echo "screenshot-status: the page lacks '$want'" >&2; exit 1; }
done

"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
	--window-size=1100,820 --screenshot="$out" "$url" 2>"$work/chromium.log" ||
	{ cat "$work/chromium.log" >&2; exit 1; }
[ -s "$out" ] || { echo "screenshot-status: no screenshot written" >&2; exit 1; }
echo "$out"
