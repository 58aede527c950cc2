#!/usr/bin/env bash
# The one command that runs every test, installing what it needs on a fresh machine.
#
#   ./scripts/test.sh
#
# Tiers, in order: formatting, clippy (warnings denied), then the whole workspace test suite:
# unit tests of the pure domain, the conformance suites and seal-protocol tests on the embedded
# backend (local directory + SQLite), and the CLI end to end.
#
# Builds go to a target directory outside the clone (CARGO_TARGET_DIR, by default
# ~/.cache/s3-compactor/target) so that repeated runs on one machine reuse what was compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-compactor/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
started=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
cargo test --workspace --locked

say "all tests passed"
