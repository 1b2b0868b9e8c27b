#!/usr/bin/env bash
# Base images for the `peers` compose profile (only what is missing), like bootstrap.sh:
# NODE_IMAGE (default node:22-slim) and PHP_IMAGE (default php:8.3-cli) are used when present
# or pullable; otherwise a local stand-in is built from `debootstrap --variant=minbase
# bookworm` with Debian's nodejs + npm, or php-cli + php-redis, and recorded in
# .images.peers.env, which the Makefile and e2e read. Run only when the profile is used,
# so `make up` without peers stays as fast as before. Needs the engine bootstrap.sh set up.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGES_ENV=.images.peers.env
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump when the stand-in recipe below changes (the tag also follows the host CA bundle).
RECIPE=1

log() { printf '[bootstrap-peers] %s\n' "$*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pullable() {
  have_image "$1" && return 0
  log "pulling $1"
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

standin_tag() { # name packages
  local sum
  sum=$({ echo "$RECIPE $2"; cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null; } | sha256sum | cut -c1-12)
  echo "pubsub-rpc-standin-$1:$sum"
}

build_standin() { # tag packages cmd [packages installed afterwards with apt-get in the chroot]
  local tag=$1 packages=$2 cmd=$3 later=${4:-} root
  have_image "$tag" && return
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  root=$(mktemp -d /var/tmp/standin.XXXXXX)
  log "building stand-in image $tag with debootstrap (a few minutes)"
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$DEBIAN_MIRROR" >"/tmp/debootstrap-${tag//[:\/]/-}.log" 2>&1 ||
    { log "debootstrap failed; see /tmp/debootstrap-${tag//[:\/]/-}.log"; rm -rf "$root"; exit 1; }
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    # Trust what the host trusts: npm inside builds must reach its registry the same way.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  if [ -n "$later" ]; then
    # npm's many node-* packages do not configure inside debootstrap; apt-get orders them.
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    { chroot "$root" apt-get update -qq && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends $later; } \
      >>"/tmp/debootstrap-${tag//[:\/]/-}.log" 2>&1 || { umount "$root/proc"; log "apt-get install $later failed"; rm -rf "$root"; exit 1; }
    umount "$root/proc"
  fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" -c . | docker import \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change "CMD [\"$cmd\"]" - "$tag" >/dev/null
  rm -rf "$root"
  log "stand-in image $tag ready"
}

resolve() { # variable default name packages cmd [later] -> prints VARIABLE=image
  local variable=$1 image=$2 tag
  tag=$(standin_tag "$3" "$4 ${6:-}")
  if have_image "$tag"; then
    echo "$variable=$tag"  # built here before: the official image was not pullable then
  elif pullable "$image"; then
    echo "$variable=$image"
  else
    log "$image cannot be pulled; using a local stand-in"
    build_standin "$tag" "$4" "$5" "${6:-}"
    echo "$variable=$tag"
  fi
}

node=$(resolve NODE_IMAGE "${NODE_IMAGE:-node:22-slim}" node "nodejs,ca-certificates" node npm)
php=$(resolve PHP_IMAGE "${PHP_IMAGE:-php:8.3-cli}" php "php-cli,php-redis,ca-certificates" php)
printf '%s\n%s\n' "$node" "$php" >"$IMAGES_ENV"
log "images ready (${node#*=}, ${php#*=})"
