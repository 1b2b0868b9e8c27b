#!/usr/bin/env bash
# Make this machine able to run the compose stack, changing nothing that already works.
#
#   1. No Docker engine answering? Install Debian's docker.io + docker-compose (root + apt
#      only) and start dockerd in the background.
#   2. For each base image (PYTHON_IMAGE, default python:3.12-slim; REDIS_IMAGE, default
#      redis:7): present or pullable -> use it. Otherwise build one local stand-in from
#      `debootstrap --variant=minbase bookworm` (python3, venv, redis-server and the host's
#      CA bundle, so pip works behind a TLS-intercepting proxy) and record the override in
#      .images.env, which the Makefile reads. The stand-in is cached by a hash of its recipe.
#
# Idempotent and fast when everything is there: a warm run is a few `docker image inspect`s.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGES_ENV=.images.env
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.12-slim}
REDIS_IMAGE=${REDIS_IMAGE:-redis:7}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STANDIN_PACKAGES="python3,python3-venv,redis-server,ca-certificates"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

ensure_engine() {
  if command -v docker >/dev/null && engine_answers; then return; fi
  if ! command -v dockerd >/dev/null || ! { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      log "No Docker engine. Install Docker Engine + Compose (https://docs.docker.com/engine/install/) and retry."
      exit 1
    fi
    log "installing docker.io and docker-compose with apt"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null
  fi
  if ! engine_answers; then
    if [ "$(id -u)" != 0 ]; then
      log "The Docker engine is installed but not running; start it (sudo systemctl start docker)."
      exit 1
    fi
    log "starting dockerd (log: /var/log/dockerd-bootstrap.log)"
    nohup dockerd >/var/log/dockerd-bootstrap.log 2>&1 &
    for _ in $(seq 1 60); do engine_answers && break; sleep 1; done
    engine_answers || { log "dockerd did not come up; see /var/log/dockerd-bootstrap.log"; exit 1; }
  fi
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

pullable() {
  have_image "$1" && return 0
  log "pulling $1"
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

standin_tag() {
  # The tag changes whenever the recipe (this script) or the host CA bundle does.
  local sum
  sum=$(cat "$0" /etc/ssl/certs/ca-certificates.crt 2>/dev/null | sha256sum | cut -c1-12)
  echo "pubsub-rpc-standin:$sum"
}

build_standin() {
  local tag=$1 root
  have_image "$tag" && return
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  root=$(mktemp -d /var/tmp/standin.XXXXXX)
  log "building stand-in image $tag with debootstrap (about a minute)"
  debootstrap --variant=minbase --include="$STANDIN_PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" >/tmp/debootstrap.log 2>&1 ||
    { log "debootstrap failed; see /tmp/debootstrap.log"; rm -rf "$root"; exit 1; }
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    # Trust what the host trusts: pip inside builds must reach PyPI through the same proxy.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$tag" >/dev/null
  rm -rf "$root"
  log "stand-in image $tag ready"
}

ensure_images() {
  local python_image=$PYTHON_IMAGE redis_image=$REDIS_IMAGE tag
  tag=$(standin_tag)
  if ! pullable "$PYTHON_IMAGE"; then
    log "$PYTHON_IMAGE cannot be pulled; using a local stand-in"
    build_standin "$tag"; python_image=$tag
  fi
  if ! pullable "$REDIS_IMAGE"; then
    log "$REDIS_IMAGE cannot be pulled; using a local stand-in"
    build_standin "$tag"; redis_image=$tag
  fi
  if [ "$python_image" = "$PYTHON_IMAGE" ] && [ "$redis_image" = "$REDIS_IMAGE" ]; then
    rm -f "$IMAGES_ENV"
  else
    printf 'PYTHON_IMAGE=%s\nREDIS_IMAGE=%s\n' "$python_image" "$redis_image" >"$IMAGES_ENV"
  fi
}

ensure_engine
# A stand-in recorded earlier is reused without another (slow, failing) pull.
if [ -f "$IMAGES_ENV" ]; then
  # shellcheck disable=SC1090
  . "./$IMAGES_ENV"
  if have_image "$PYTHON_IMAGE" && have_image "$REDIS_IMAGE" && grep -q "$(standin_tag)" "$IMAGES_ENV"; then
    log "images ready ($PYTHON_IMAGE, $REDIS_IMAGE)"
    exit 0
  fi
  PYTHON_IMAGE=python:3.12-slim REDIS_IMAGE=redis:7
fi
ensure_images
log "images ready"
