#!/usr/bin/env bash
# Undo .ci/docker-up.sh: remove the containers the scheduler labelled as its own, then stop the
# dockerd that docker-up.sh started (by its recorded PID) and wait for it to exit.  An engine that
# docker-up.sh found already running has no PID file here and is left running.
set -euo pipefail

CI_DIR="${DOCKER_CI_DIR:-/tmp/scheduler-dockerd}"
PID_FILE="$CI_DIR/dockerd.pid"
SOCKET="unix:///var/run/docker.sock"
LABEL="org.cron-scheduler.managed-by=scheduler"

log() { echo "docker-down: $*" >&2; }

if docker -H "$SOCKET" info >/dev/null 2>&1; then
  ours="$(docker -H "$SOCKET" ps -aq --filter "label=$LABEL")"
  if [ -n "$ours" ]; then
    log "removing $(echo "$ours" | wc -l) labelled container(s)"
    # shellcheck disable=SC2086  # one ID per word
    docker -H "$SOCKET" rm -f $ours >/dev/null
  fi
fi

if [ ! -s "$PID_FILE" ]; then
  log "no dockerd started by docker-up.sh; nothing to stop"
  exit 0
fi
pid="$(cat "$PID_FILE")"
if ! kill -0 "$pid" 2>/dev/null || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
  log "dockerd $pid is not running"
  rm -f "$PID_FILE"
  exit 0
fi
log "stopping dockerd $pid"
kill -TERM "$pid"
# dockerd stops its containers (10s grace each, in parallel) and its containerd before exiting.
for _ in $(seq 1 60); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; log "dockerd $pid exited"; exit 0; }
  sleep 0.5
done
log "dockerd $pid still running after 30s; sending SIGKILL"
kill -KILL "$pid" 2>/dev/null || true
for _ in $(seq 1 20); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.25
done
rm -f "$PID_FILE"
