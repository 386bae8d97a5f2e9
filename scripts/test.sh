#!/usr/bin/env bash
# The whole test suite, as CI runs it: brings up the local Slurm test bed (installing
# Debian's slurm-wlm, slurmrestd and munge if missing), exports its settings, and runs
# every test with cargo-nextest. Tests that need Slurm fail loudly without it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/slurm-testbed.sh up
# Headless Chromium for the status-page test (tests/serve_page.rs), from Debian.
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
eval "$(scripts/slurm-testbed.sh env)"
# GitHub's OpenAPI description for the GitHub API emulator's schema checks (npm, idempotent),
# and the stand-in runner binary the GitHub tests start.
scripts/github-openapi.sh >/dev/null
cargo build --quiet --example fake_runner
cargo nextest run --no-fail-fast "$@"
