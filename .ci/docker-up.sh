#!/usr/bin/env bash
# Start a Docker engine for tests and CI, and build the local images the tests use.
#
#   bash .ci/docker-up.sh            # engine + scheduler-test-busybox:latest
#   bash .ci/docker-up.sh --base     # ... + scheduler-base:bookworm (debootstrap, about a minute)
#   bash .ci/docker-up.sh --base-only
#
# Idempotent: packages are installed only when missing, an engine that already answers is reused
# (and then left alone by docker-down.sh), images are built only when absent.  No registry is
# reachable, so every image is made locally: the test image from Debian's busybox-static, the
# Python base image from debootstrap piped into `docker import`.
#
# Environment:
#   DOCKER_CI_DIR      where the PID file and the engine log go (default /tmp/scheduler-dockerd)
#   DOCKER_DATA_ROOT   the engine's data root (default /var/lib/docker)
#   DEBIAN_MIRROR      mirror for debootstrap (default: the first Debian URI apt is configured with)
#   TEST_IMAGE, BASE_IMAGE   image names (defaults below)
set -euo pipefail

CI_DIR="${DOCKER_CI_DIR:-/tmp/scheduler-dockerd}"
PID_FILE="$CI_DIR/dockerd.pid"
LOG_FILE="$CI_DIR/dockerd.log"
SOCKET="unix:///var/run/docker.sock"
DATA_ROOT="${DOCKER_DATA_ROOT:-/var/lib/docker}"
TEST_IMAGE="${TEST_IMAGE:-scheduler-test-busybox:latest}"
BASE_IMAGE="${BASE_IMAGE:-scheduler-base:bookworm}"

want_engine=1 want_test=1 want_base=0
for arg in "$@"; do
  case "$arg" in
    --base) want_base=1 ;;
    --base-only) want_base=1 want_test=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "docker-up: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { echo "docker-up: $*" >&2; }

engine_answers() { docker -H "$SOCKET" info >/dev/null 2>&1; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  # busybox-static's binary runs FROM scratch; the dynamic one from `busybox` would not.
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  if [ "$want_base" = 1 ]; then command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap); fi
  [ "${#missing[@]}" = 0 ] && return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then log "root is needed to install packages"; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

start_engine() {
  if engine_answers; then
    log "an engine already answers on $SOCKET; reusing it"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then log "root is needed to start dockerd"; exit 1; fi
  mkdir -p "$CI_DIR"
  if [ -s "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    log "dockerd $(cat "$PID_FILE") is starting; waiting for it"
  else
    log "starting dockerd (log: $LOG_FILE)"
    # setsid: the engine must not die with the shell that started it, nor take its signals.
    setsid dockerd --host "$SOCKET" --data-root "$DATA_ROOT" >>"$LOG_FILE" 2>&1 < /dev/null &
    echo $! >"$PID_FILE"
  fi
  local pid; pid="$(cat "$PID_FILE")"
  for _ in $(seq 1 120); do
    if engine_answers; then log "dockerd $pid is ready"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited during start; last lines of $LOG_FILE:"; tail -n 20 "$LOG_FILE" >&2
      rm -f "$PID_FILE"; exit 1
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60s; see $LOG_FILE"; exit 1
}

image_exists() { docker -H "$SOCKET" image inspect "$1" >/dev/null 2>&1; }

# FROM scratch + busybox-static, made with `docker import` from a tarball: no build tool needed.
build_test_image() {
  if image_exists "$TEST_IMAGE"; then log "$TEST_IMAGE present"; return 0; fi
  local root; root="$(mktemp -d)"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/data"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" --numeric-owner -cf - . | docker -H "$SOCKET" import \
    --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
    --change "LABEL org.cron-scheduler.test-image=busybox" - "$TEST_IMAGE" >/dev/null
  rm -rf "$root"
  log "built $TEST_IMAGE"
}

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' \
         | grep -v -- '-security' | head -n 1 || true)"
  if [ -z "$uri" ]; then
    uri="$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
           | grep -v -- '-security' | grep -i debian | awk '{print $2}' | head -n 1 || true)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# A minimal Debian with python3: the base the project image builds on when no registry is reachable.
build_base_image() {
  if image_exists "$BASE_IMAGE"; then log "$BASE_IMAGE present"; return 0; fi
  command -v debootstrap >/dev/null 2>&1 || { want_base=1; install_packages; }
  local root mirror; root="$(mktemp -d /var/tmp/scheduler-base.XXXXXX)"; mirror="$(debian_mirror)"
  log "debootstrap bookworm from $mirror (about a minute)"
  if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$mirror" >"$CI_DIR/debootstrap.log" 2>&1; then
    log "debootstrap failed; last lines of $CI_DIR/debootstrap.log:"; tail -n 20 "$CI_DIR/debootstrap.log" >&2
    rm -rf "$root"; exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/debootstrap
  tar -C "$root" --numeric-owner -cf - . | docker -H "$SOCKET" import \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  log "built $BASE_IMAGE"
}

mkdir -p "$CI_DIR"
install_packages
[ "$want_engine" = 1 ] && start_engine
[ "$want_test" = 1 ] && build_test_image
[ "$want_base" = 1 ] && build_base_image
exit 0
