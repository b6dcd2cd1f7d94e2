#!/usr/bin/env bash
#
# Step 2 of the go-cache-plugin action (action.yml): set GOCACHEPROG and the
# plugin's GOCACHE_* settings for the job's later steps, via $GITHUB_ENV.
#
# The bucket is read-only (GOCACHE_READ_ONLY) for pull requests from forks,
# whose code should not write what other jobs build from; and it is left out
# (local cache only) when the job has no AWS credentials, for example a fork's
# pull request, which gets no secrets: the plugin could neither read nor
# write it. Neither case fails the job.
#
# Inputs (from action.yml): INPUT_BUCKET, INPUT_PREFIX, INPUT_REGION,
# INPUT_S3_ENDPOINT_URL, INPUT_S3_PATH_STYLE, INPUT_READ_ONLY (auto, true,
# false), INPUT_CREDENTIALS (auto, instance), INPUT_CACHE_DIR.
# Runner variables: RUNNER_TEMP, GITHUB_ENV, GITHUB_EVENT_NAME,
# GITHUB_EVENT_PATH.
set -euo pipefail
: "${RUNNER_TEMP:?}" "${GITHUB_ENV:?}"

home="$RUNNER_TEMP/go-cache-plugin"
bin="$home/bin/go-cache-plugin"

# setenv NAME VALUE: for the job's later steps. A value with a newline would
# let an input set other variables: refuse it.
setenv() {
    if [[ "$2" == *$'\n'* || "$2" == *$'\r'* ]]; then
        echo "::error::go-cache-plugin: the value for $1 holds a line break" >&2
        exit 1
    fi
    echo "$1=$2" >>"$GITHUB_ENV"
}

# fork_pr succeeds if the event is a pull request whose head is in another
# repository than its base (a fork), or whose head repository is gone. If
# the event cannot be read, it says so and succeeds: read-only is the safe
# side.
fork_pr() {
    case "${GITHUB_EVENT_NAME:-}" in
    pull_request | pull_request_target | pull_request_review | pull_request_review_comment) ;;
    *) return 1 ;;
    esac
    local ev="${GITHUB_EVENT_PATH:-}" answer
    if [[ -z "$ev" || ! -r "$ev" ]]; then
        echo "go-cache-plugin: no readable event file (GITHUB_EVENT_PATH); taking the pull request for a fork's" >&2
        return 0
    fi
    # Node.js is on every runner (actions run on it), unlike jq or python.
    if command -v node >/dev/null; then
        answer=$(node -e '
const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).pull_request || {};
const head = (p.head || {}).repo || {}, base = (p.base || {}).repo || {};
const same = head.full_name && head.full_name === base.full_name && !head.fork;
console.log(same ? "same" : "fork");' "$ev") || answer=fork
    else
        echo "go-cache-plugin: no node to read the event; taking the pull request for a fork's" >&2
        answer=fork
    fi
    [[ "$answer" != same ]]
}

# have_credentials succeeds if the AWS SDK will find credentials other than
# an instance role: variables (as aws-actions/configure-aws-credentials sets
# them, or for web identity and containers), a profile, or credential files.
have_credentials() {
    [[ -n "${AWS_ACCESS_KEY_ID:-}" || -n "${AWS_WEB_IDENTITY_TOKEN_FILE:-}" || -n "${AWS_PROFILE:-}" ||
        -n "${AWS_CONTAINER_CREDENTIALS_FULL_URI:-}" || -n "${AWS_CONTAINER_CREDENTIALS_RELATIVE_URI:-}" ]] && return 0
    [[ -r "${AWS_SHARED_CREDENTIALS_FILE:-$HOME/.aws/credentials}" || -r "${AWS_CONFIG_FILE:-$HOME/.aws/config}" ]]
}

bucket="${INPUT_BUCKET:-}"
read_only=false
why=""
case "${INPUT_READ_ONLY:-auto}" in
true) read_only=true why="read-only: true" ;;
false) ;;
auto)
    if fork_pr; then
        read_only=true why="a pull request from a fork"
    fi
    ;;
*)
    echo "::error::go-cache-plugin: read-only is \"${INPUT_READ_ONLY}\"; want auto, true or false" >&2
    exit 1
    ;;
esac
case "${INPUT_CREDENTIALS:-auto}" in
auto)
    if [[ -n "$bucket" ]] && ! have_credentials; then
        echo "::notice::go-cache-plugin: no AWS credentials in this job: the local cache only, without bucket $bucket (set credentials: instance if the runner has an instance role)"
        bucket=""
    fi
    ;;
instance) ;;
*)
    echo "::error::go-cache-plugin: credentials is \"${INPUT_CREDENTIALS}\"; want auto or instance" >&2
    exit 1
    ;;
esac

prog="$bin"
if [[ "$prog" == *" "* ]]; then
    prog="'$prog'" # GOCACHEPROG is split into words, with quoting
fi
setenv GOCACHEPROG "$prog"
setenv GOCACHE_DIR "${INPUT_CACHE_DIR:-$home/cache}"
mkdir -p "$home"
setenv GOCACHE_METRICS_FILE "$home/metrics.jsonl"
: >"$home/metrics.jsonl"
if [[ -n "$bucket" ]]; then
    setenv GOCACHE_S3_BUCKET "$bucket"
    setenv GOCACHE_KEY_PREFIX "${INPUT_PREFIX:-}"
    setenv GOCACHE_S3_REGION "${INPUT_REGION:-}"
    setenv GOCACHE_S3_ENDPOINT_URL "${INPUT_S3_ENDPOINT_URL:-}"
    setenv GOCACHE_S3_PATH_STYLE "${INPUT_S3_PATH_STYLE:-false}"
    setenv GOCACHE_READ_ONLY "$read_only"
    if $read_only; then
        echo "go-cache-plugin: bucket $bucket, read-only ($why)"
    else
        echo "go-cache-plugin: bucket $bucket"
    fi
else
    echo "go-cache-plugin: local cache only"
fi
