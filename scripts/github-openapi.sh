#!/usr/bin/env bash
# Installs GitHub's published OpenAPI description (the npm package @octokit/openapi) into
# target/github-openapi, where the GitHub API emulator's schema checks read
# `api.github.com.json` from. Idempotent: does nothing when the description is present.
# Prints the path of the description on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${GITHUB_OPENAPI_DIR:-target/github-openapi}"
version="${GITHUB_OPENAPI_VERSION:-23.0.2}"
spec="$dir/node_modules/@octokit/openapi/generated/api.github.com.json"

if [[ ! -s "$spec" ]]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "@octokit/openapi@$version" >&2
fi
if [[ ! -s "$spec" ]]; then
    echo "github-openapi: $spec missing after npm install" >&2
    exit 1
fi
echo "$(cd "$(dirname "$spec")" && pwd)/$(basename "$spec")"
