#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a machine that has only Rust, git and Debian's
# base system: installs what the tests need on the host (debootstrap, Chromium, the npm
# package @octokit/openapi), builds the Slurm test beds' Debian roots (cached outside the
# checkout, in the background while cargo builds), starts every Slurm generation and the real
# apiextensions-apiserver (scripts/kube-apiserver.sh), and runs
# every test with cargo-nextest. Tests that need Slurm fail loudly without it.
# Must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "scripts/test.sh: run as root (it installs packages and starts Slurm)" >&2; exit 1; }

# Host packages, in one apt run: debootstrap builds the roots; Chromium is for the
# status-page test (tests/it/serve_page.rs).
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Slurm roots (a few minutes when not cached) build while cargo compiles.
roots_log=$(mktemp)
scripts/slurm-testbed.sh build >"$roots_log" 2>&1 &
roots=$!
# So does the real apiextensions-apiserver for CRD tests (its root and a ~7 minute Go build
# when not cached).
kube_log=$(mktemp)
scripts/kube-apiserver.sh build >"$kube_log" 2>&1 &
kube=$!

# GitHub's OpenAPI description for the GitHub API emulator's schema checks (npm, idempotent),
# the stand-in runner binary the tests start, and the test binaries.
scripts/github-openapi.sh >/dev/null
cargo build --quiet --example fake_runner
cargo nextest run --no-run --cargo-quiet "$@"

wait "$roots" || { cat "$roots_log" >&2; exit 1; }
scripts/slurm-testbed.sh up
eval "$(scripts/slurm-testbed.sh env)"
wait "$kube" || { cat "$kube_log" >&2; exit 1; }
scripts/kube-apiserver.sh up
eval "$(scripts/kube-apiserver.sh env)"
cargo nextest run --no-fail-fast "$@"
