#!/usr/bin/env bash
# The one command that runs every test, installing what it needs on a fresh machine.
#
#   ./scripts/test.sh
#
# In order:
#   1. installs the local servers (SeaweedFS for S3, ministack for DynamoDB, SQS and S3 event
#      notifications), cfn-lint, the SAM CLI, cargo-lambda, zig and DuckDB (the reader the format tests
#      count records with) into a Python virtual environment, once;
#   2. cargo fmt --check, cargo clippy with warnings denied, cfn-lint and `sam validate --lint`
#      on the SAM template;
#   3. starts the servers on 127.0.0.1 and runs `cargo test --workspace`: the unit tests, the
#      conformance suites on the embedded backend AND on the servers, the seal protocol with a
#      crash at every step, the Lambda handlers with real event JSON, the end-to-end path
#      S3 -> notification -> SQS -> ingest -> DynamoDB -> seal -> outputs, and the CLI;
#   4. with the CLI's AWS backend compiled in (`cargo test -p s3-compactor --features aws`),
#      the real s3-compactor binary against the same servers: init, ingest --scan, seal,
#      audit, verify --against-sources, restore;
#   5. runs the benchmark once, small (--quick), to check it still works end to end;
#   6. builds both functions the way `sam build` does (cargo-lambda, x86_64), deploys
#      sam/template.yaml to a ministack of its own and runs it: objects in, outputs verified by
#      the CLI (sam/tests/deploy_on_ministack.py; COMPACTOR_SKIP_DEPLOY_TEST=1 skips it);
#   7. stops the servers.
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

say "installing the local servers, cfn-lint, the SAM CLI and cargo-lambda and DuckDB into $venv"
install_servers
# The format tests find DuckDB there.
export COMPACTOR_VENV="$venv"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The CLI's AWS backend is a feature the workspace build leaves off: check it too.
cargo clippy -p s3-compactor --all-targets --features aws --locked -- -D warnings

say "cfn-lint and sam validate --lint on sam/template.yaml"
"$venv/bin/cfn-lint" sam/template.yaml
SAM_CLI_TELEMETRY=0 "$venv/bin/sam" validate --lint --template-file sam/template.yaml --region us-east-1

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

if [ "${COMPACTOR_SKIP_DEPLOY_TEST:-}" = 1 ]; then
  say "SKIPPED: the SAM stack on ministack (COMPACTOR_SKIP_DEPLOY_TEST=1)"
else
  # Its own ministack, and a build directory outside the clone. cargo-lambda cross-links with
  # zig for x86_64-unknown-linux-gnu, so it compiles every dependency again: into a target
  # directory of its own that later runs reuse, and in the dev profile (SAM_BUILD_MODE=debug),
  # since a release build of the AWS SDK alone takes far longer on 2 cores. Users' `sam build`
  # builds in release mode; both go through the same cargo-lambda path.
  say "SAM stack on ministack: sam build (cargo-lambda) + sam deploy + objects in, outputs verified"
  deploy_started=$(date +%s)
  SAM_BUILD_MODE=debug CARGO_TARGET_DIR="$CARGO_TARGET_DIR-lambda" \
    "$venv/bin/python" sam/tests/deploy_on_ministack.py --cli "$CARGO_TARGET_DIR/debug/s3-compactor" \
    --build-dir "$CARGO_TARGET_DIR-lambda/sam-build"
  say "SAM stack on ministack passed in $(( $(date +%s) - deploy_started ))s"
fi

say "all tests passed"
