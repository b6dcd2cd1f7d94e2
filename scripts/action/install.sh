#!/usr/bin/env bash
#
# Step 1 of the go-cache-plugin action (action.yml): build and install the
# binary from the action's own checkout, so that the binary is the action's
# ref, and put it on the job's PATH.
#
# Runner variables: GITHUB_ACTION_PATH (the action's checkout), RUNNER_TEMP,
# GITHUB_PATH.
set -euo pipefail
: "${GITHUB_ACTION_PATH:?}" "${RUNNER_TEMP:?}" "${GITHUB_PATH:?}"

home="$RUNNER_TEMP/go-cache-plugin"
mkdir -p "$home/bin"
# The action's checkout is a module of its own: build it with its go.mod,
# whatever the job's GOFLAGS, workspace or cache program say.
(
    cd "$GITHUB_ACTION_PATH"
    env -u GOFLAGS -u GOCACHEPROG GOWORK=off GOBIN="$home/bin" go install ./cmd/go-cache-plugin
)
echo "$home/bin" >>"$GITHUB_PATH"
echo "go-cache-plugin: installed $("$home/bin/go-cache-plugin" version 2>/dev/null | head -n1) in $home/bin"
