#!/usr/bin/env bash
#
# The summary action (summary/action.yml): total the metrics file of the
# job's go commands (GOCACHE_METRICS_FILE, set by the main action) and add
# it to the job's summary ($GITHUB_STEP_SUMMARY). It never fails the job.
set -uo pipefail

file="${GOCACHE_METRICS_FILE:-}"
if [[ -z "$file" ]]; then
    echo "::warning::go-cache-plugin summary: GOCACHE_METRICS_FILE is not set; did the go-cache-plugin action run in this job?"
    exit 0
fi
bin="$(command -v go-cache-plugin || true)"
if [[ -z "$bin" ]]; then
    echo "::warning::go-cache-plugin summary: go-cache-plugin is not on PATH; did the go-cache-plugin action run in this job?"
    exit 0
fi
"$bin" summary "$file" || true
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    if ! "$bin" summary --markdown "$file" >>"$GITHUB_STEP_SUMMARY"; then
        echo "::warning::go-cache-plugin summary: could not summarise $file"
    fi
fi
exit 0
