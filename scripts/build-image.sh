#!/usr/bin/env bash
# Build the scheduler image where no container registry (and maybe no package index) is reachable.
#
#   scripts/build-image.sh --debootstrap-base          # the usual offline build: base + wheels + image
#   scripts/build-image.sh --base IMAGE                # offline, on a Python 3.11 base you already have
#   scripts/build-image.sh --online                    # plain `docker build`: pulls the slim base, pip from the index
#   scripts/build-image.sh --wheelhouse-only           # only fill wheelhouse/ (carry it to an air-gapped server)
#
# Offline (the default) means: the wheels for requirements.lock are put in wheelhouse/ on this host
# (pip, with the host's own index settings and CA), and the image installs them with
# `pip install --no-index --find-links`; the build itself contacts no index and no registry.
# A complete wheelhouse/ is reused as is, so on an air-gapped server copy wheelhouse/ in first.
#
# Options:
#   --tag TAG            image name (default cron-container-scheduler:latest)
#   --base IMAGE         base image with python3 3.11 and its venv module
#   --debootstrap-base   use scheduler-base:bookworm, building it with debootstrap when missing
#   --online             install from the package index inside the build, no wheelhouse
#   --wheelhouse-only    fill wheelhouse/ and stop
#   --label KEY=VALUE    extra image label (repeatable)
#   -- ARGS...           passed to `docker build` as is
# Environment: PYTHON (default python3) runs pip; DOCKER (default docker) is the CLI.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DOCKER="${DOCKER:-docker}"
DEBOOTSTRAP_BASE="scheduler-base:bookworm"
tag="cron-container-scheduler:latest" base="" debootstrap=0 online=0 wheels_only=0
labels=() extra=()

usage() { sed -n '2,24p' "$0"; }
log() { echo "build-image: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --debootstrap-base) debootstrap=1; shift ;;
    --online) online=1; shift ;;
    --wheelhouse-only) wheels_only=1; shift ;;
    --label) labels+=(--label "$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) log "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done

LOCK="$REPO/requirements.lock"
WHEELHOUSE="$REPO/wheelhouse"

# Wheels for exactly the pinned versions, for CPython 3.11 on this machine's architecture.
fill_wheelhouse() {
  mkdir -p "$WHEELHOUSE"
  local pip=("$PYTHON" -m pip)
  if "${pip[@]}" download --quiet --no-index --find-links "$WHEELHOUSE" --no-deps --only-binary :all: \
       -r "$LOCK" -d "$WHEELHOUSE" >/dev/null 2>&1; then
    log "wheelhouse/ already holds every pinned wheel"
    return 0
  fi
  local version; version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$version" = 3.11 ]; then
    # `pip wheel` takes a published wheel when there is one and builds the rest from source here,
    # so the image never needs a compiler.
    log "filling wheelhouse/ with pip wheel ($PYTHON)"
    "${pip[@]}" wheel --quiet --no-deps --find-links "$WHEELHOUSE" -r "$LOCK" -w "$WHEELHOUSE"
  else
    local arch; arch="$(uname -m)"
    log "$PYTHON is $version: downloading published CPython 3.11 wheels for $arch"
    "${pip[@]}" download --quiet --no-deps --only-binary :all: --implementation cp --python-version 3.11 \
      --abi cp311 --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" \
      --platform "manylinux2014_$arch" -r "$LOCK" -d "$WHEELHOUSE"
  fi
  log "wheelhouse/: $(find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' | wc -l) wheel(s)"
}

if [ "$online" = 0 ]; then
  fill_wheelhouse
  [ "$wheels_only" = 1 ] && exit 0
  install_from=wheelhouse
else
  install_from=index
fi

if [ "$debootstrap" = 1 ]; then
  base="${base:-$DEBOOTSTRAP_BASE}"
  if ! "$DOCKER" image inspect "$base" >/dev/null 2>&1; then
    log "building $base with debootstrap (about a minute)"
    BASE_IMAGE="$base" bash "$REPO/.ci/docker-up.sh" --base-only
  fi
fi
base_args=()
[ -n "$base" ] && base_args=(--build-arg "BASE_IMAGE=$base")

revision="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -n 1)"
log "building $tag (base ${base:-the Dockerfile default}, dependencies from the $install_from)"
"$DOCKER" build "${base_args[@]}" \
  --build-arg "INSTALL_FROM=$install_from" \
  --build-arg "VERSION=${version:-0.0.0}" \
  --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "${labels[@]}" -t "$tag" "${extra[@]}" "$REPO"
size="$("$DOCKER" image inspect -f '{{.Size}}' "$tag")"
log "built $tag: $((size / 1000000)) MB"
