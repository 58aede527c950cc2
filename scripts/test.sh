#!/usr/bin/env bash
# The one command that runs every test, installing what it needs on a fresh machine.
#
#   ./scripts/test.sh
#
# In order:
#   1. installs the local servers (SeaweedFS for S3, ministack for DynamoDB, SQS and S3 event
#      notifications), cfn-lint and DuckDB (the reader the format tests count records with)
#      into a Python virtual environment, once;
#   2. cargo fmt --check, cargo clippy with warnings denied, cfn-lint on the SAM template;
#   3. starts the servers on 127.0.0.1 and runs `cargo test --workspace`: the unit tests, the
#      conformance suites on the embedded backend AND on the servers, the seal protocol with a
#      crash at every step, the Lambda handlers with real event JSON, the end-to-end path
#      S3 -> notification -> SQS -> ingest -> DynamoDB -> seal -> outputs, and the CLI;
#   4. with the CLI's AWS backend compiled in (`cargo test -p s3-compactor --features aws`),
#      the real s3-compactor binary against the same servers: init, ingest --scan, seal,
#      audit, verify --against-sources, restore;
#   5. runs the benchmark once, small (--quick), to check it still works end to end;
#   6. stops the servers.
#
# Builds go to a target directory outside the clone (CARGO_TARGET_DIR, by default
# ~/.cache/s3-compactor/target) so repeated runs on one machine reuse what was compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-compactor/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
source scripts/servers.sh
started=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

say "installing the local servers, cfn-lint and DuckDB into $venv"
install_servers
# The format tests find DuckDB there.
export COMPACTOR_VENV="$venv"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The CLI's AWS backend is a feature the workspace build leaves off: check it too.
cargo clippy -p s3-compactor --all-targets --features aws --locked -- -D warnings

say "cfn-lint sam/template.yaml"
"$venv/bin/cfn-lint" sam/template.yaml

say "starting SeaweedFS (S3) and ministack (DynamoDB, SQS, S3 notifications) on 127.0.0.1"
start_servers
export COMPACTOR_TEST_S3_ENDPOINT="$S3_ENDPOINT"
export COMPACTOR_TEST_DYNAMODB_ENDPOINT="$DYNAMODB_ENDPOINT"
export COMPACTOR_TEST_MINISTACK_ENDPOINT="$DYNAMODB_ENDPOINT"
# The server tier is mandatory here: a test that finds no endpoint fails instead of skipping.
export COMPACTOR_REQUIRE_SERVERS=1

say "cargo test (S3 at $COMPACTOR_TEST_S3_ENDPOINT, DynamoDB/SQS at $COMPACTOR_TEST_DYNAMODB_ENDPOINT)"
cargo test --workspace --locked --no-fail-fast

say "cargo test of the CLI with its AWS backend (S3 at $COMPACTOR_TEST_S3_ENDPOINT, DynamoDB at $COMPACTOR_TEST_DYNAMODB_ENDPOINT)"
cargo test -p s3-compactor --features aws --locked --no-fail-fast

say "benchmark smoke run (--quick, dev profile: checks the benchmark works, its numbers mean little)"
cargo run --quiet --locked -p compactor-bench -- --s3-endpoint "$S3_ENDPOINT" --dynamodb-endpoint "$DYNAMODB_ENDPOINT" \
  --quick

say "all tests passed"
