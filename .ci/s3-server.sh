#!/usr/bin/env bash
# A real S3 server (s3s-fs, pinned) on 127.0.0.1 for the storage tests.
#
#   eval "$(.ci/s3-server.sh start)"   # installs s3s-fs if needed, starts it, prints exports
#   .ci/s3-server.sh stop              # stops it (by the recorded PID)
#
# start prints, on stdout only:
#   export QVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:<port>
#   export QVAULT_TEST_S3_BUCKET=qvault-test
#   export QVAULT_TEST_S3_ACCESS_KEY=... QVAULT_TEST_S3_SECRET_KEY=...
# Everything else goes to stderr. State (data dir, pid, log) lives in $QVAULT_S3_STATE
# (default .ci/.s3-server in this checkout), so several checkouts can each run one.
# The port is $QVAULT_S3_PORT, or the first free one from 18014 up.
set -euo pipefail

S3S_VERSION=0.14.1
BUCKET=qvault-test
# Test-only credentials for a server bound to loopback; not secrets.
ACCESS_KEY=qvault-test-access
SECRET_KEY=qvault-test-secret-key

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${QVAULT_S3_STATE:-$ROOT/.ci/.s3-server}"
PID_FILE="$STATE/pid"
ENV_FILE="$STATE/env"
LOG_FILE="$STATE/log"

log() { echo "s3-server: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

install_s3s() {
  if cargo install --list | grep -q "^s3s-fs v${S3S_VERSION}:"; then
    return
  fi
  log "installing s3s-fs ${S3S_VERSION} (compiles for a few minutes)"
  cargo install --locked "s3s-fs@${S3S_VERSION}" --features binary >&2
}

start() {
  if running; then
    log "already running (pid $(cat "$PID_FILE"))"
    cat "$ENV_FILE"
    return
  fi
  install_s3s
  local bin
  bin="$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")"
  mkdir -p "$STATE"
  rm -rf "$STATE/data"
  mkdir -p "$STATE/data/$BUCKET"

  local port="${QVAULT_S3_PORT:-}"
  if [[ -z "$port" ]]; then
    port=18014
    while port_open "$port"; do port=$((port + 1)); done
  fi

  log "starting s3s-fs on 127.0.0.1:$port (data in $STATE/data, log in $LOG_FILE)"
  nohup "$bin" --host 127.0.0.1 --port "$port" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
    "$STATE/data" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"

  for _ in $(seq 1 100); do
    if port_open "$port"; then
      cat >"$ENV_FILE" <<ENV
export QVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export QVAULT_TEST_S3_BUCKET=$BUCKET
export QVAULT_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export QVAULT_TEST_S3_SECRET_KEY=$SECRET_KEY
ENV
      cat "$ENV_FILE"
      return
    fi
    if ! running; then
      log "s3s-fs exited during startup; its log:"
      cat "$LOG_FILE" >&2
      rm -f "$PID_FILE"
      exit 1
    fi
    sleep 0.1
  done
  log "s3s-fs did not open port $port within 10 s; stopping it"
  stop
  exit 1
}

stop() {
  if [[ -f "$PID_FILE" ]]; then
    local pid
    pid="$(cat "$PID_FILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "stopped (pid $pid)"
    fi
    rm -f "$PID_FILE" "$ENV_FILE"
  else
    log "not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
