#!/usr/bin/env bash
#
# Step 3 of the go-cache-plugin action (action.yml): set the modification
# times of the workspace's tracked files from their content, so that test
# results cached by another job of the same commit match here. A failure
# is a warning: the job runs on, with fewer cached test results.
#
# Inputs: INPUT_CANONICAL_MTIMES (true, false), INPUT_MTIMES_DIR (default:
# GITHUB_WORKSPACE). Runner variables: RUNNER_TEMP, GITHUB_WORKSPACE.
set -uo pipefail
: "${RUNNER_TEMP:?}"

if [[ "${INPUT_CANONICAL_MTIMES:-true}" != true ]]; then
    echo "go-cache-plugin: canonical-mtimes: off"
    exit 0
fi
dir="${INPUT_MTIMES_DIR:-${GITHUB_WORKSPACE:-.}}"
if ! "$RUNNER_TEMP/go-cache-plugin/bin/go-cache-plugin" canonical-mtimes "$dir"; then
    echo "::warning::go-cache-plugin: canonical-mtimes failed in $dir; test results cached elsewhere will not match"
fi
exit 0
