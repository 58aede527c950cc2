#!/usr/bin/env bash
# The benchmark: throughput, memory and request cost, each measured side by side with a
# reference in the same run. Installs and starts the local servers itself, like test.sh.
#
#   ./scripts/bench.sh              the full run (about 22,000 objects, 100 MB and 2 GB partitions)
#   ./scripts/bench.sh --quick      a small run that checks the benchmark works
#   ./scripts/bench.sh memory --manifest sqlite
#                                   only the peak RSS of one seal, 100 MB and 2 GB, in minutes
#   ./scripts/bench.sh parquet --partitions 100MB,2GB
#                                   only the Parquet rows: GET ceiling, seal and its peak RSS
#   ./scripts/bench.sh counts --objects 10000,100000 --seal
#                                   what a DynamoDB partition's counts cost (release, audit)
#   ./scripts/bench.sh --help       every option
#
# Prints a table and one JSON line (pass --json-out FILE to also append it to FILE). Built
# with --release; BENCH_PROFILE=dev builds faster and measures slower code.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-compactor/target}"
profile="${BENCH_PROFILE:-release}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi

# Help needs neither the servers nor an optimised build: a dev build (or the one already
# there) prints it, without a release build of the AWS SDK first.
for argument in "$@"; do
  case "$argument" in
    -h|--help|help)
      help_profile="${BENCH_PROFILE:-dev}"
      cargo build --profile "$help_profile" --locked -q -p compactor-bench
      exec "$CARGO_TARGET_DIR/$([ "$help_profile" = dev ] && echo debug || echo "$help_profile")/s3-compactor-bench" "$@"
      ;;
  esac
done

source scripts/servers.sh
echo "== installing the local servers into $venv" >&2
install_servers
echo "== building the benchmark ($profile profile)" >&2
cargo build --profile "$profile" --locked -p compactor-bench
binary="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")/s3-compactor-bench"
echo "== starting SeaweedFS (S3) and ministack (DynamoDB) on 127.0.0.1" >&2
start_servers
"$binary" --s3-endpoint "$S3_ENDPOINT" --dynamodb-endpoint "$DYNAMODB_ENDPOINT" "$@"
