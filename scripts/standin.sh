# Shared by the profile bootstraps (bootstrap_peers.sh, bootstrap_observability.sh): use an
# official image when present or pullable, else build a local stand-in from
# `debootstrap --variant=minbase bookworm` with Debian packages and import it into Docker.
# Sourced, not run. The caller sets LOG_PREFIX and, optionally, RECIPE and DEBIAN_MIRROR.
# shellcheck shell=bash

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RECIPE=${RECIPE:-1}

log() { printf '[%s] %s\n' "${LOG_PREFIX:-bootstrap}" "$*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pullable() {
  have_image "$1" && return 0
  log "pulling $1"
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

standin_tag() { # name recipe-text
  local sum
  sum=$({ echo "$RECIPE $2"; cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null; } | sha256sum | cut -c1-12)
  echo "pubsub-rpc-standin-$1:$sum"
}

# build_standin tag packages later [--change ...]: `later` are packages installed afterwards
# with apt-get inside the chroot (for those that do not configure inside debootstrap); the
# remaining arguments are passed to `docker import`. STANDIN_FIXUP, when set, is a function
# run with the root directory before the import.
build_standin() {
  local tag=$1 packages=$2 later=$3 root logfile
  shift 3
  have_image "$tag" && return
  logfile="/tmp/debootstrap-${tag//[:\/]/-}.log"
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  root=$(mktemp -d /var/tmp/standin.XXXXXX)
  log "building stand-in image $tag with debootstrap (a few minutes; log: $logfile)"
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$DEBIAN_MIRROR" >"$logfile" 2>&1 ||
    { log "debootstrap failed; see $logfile"; rm -rf "$root"; exit 1; }
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    # Trust what the host trusts: package managers inside builds reach registries the same way.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  if [ -n "$later" ]; then
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    # shellcheck disable=SC2086  # a list of package names
    { chroot "$root" apt-get update -qq && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends $later; } \
      >>"$logfile" 2>&1 || { umount "$root/proc"; log "apt-get install $later failed; see $logfile"; rm -rf "$root"; exit 1; }
    umount "$root/proc"
  fi
  if [ -n "${STANDIN_FIXUP:-}" ]; then "$STANDIN_FIXUP" "$root"; fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" -c . | docker import \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    "$@" - "$tag" >/dev/null
  rm -rf "$root"
  log "stand-in image $tag ready"
}

# resolve VARIABLE default-image name packages later [--change ...] -> prints VARIABLE=image
resolve() {
  local variable=$1 image=$2 name=$3 packages=$4 later=$5 tag
  shift 5
  tag=$(standin_tag "$name" "$packages $later")
  if have_image "$tag"; then
    echo "$variable=$tag"  # built here before: the official image was not pullable then
  elif pullable "$image"; then
    echo "$variable=$image"
  else
    log "$image cannot be pulled; using a local stand-in"
    build_standin "$tag" "$packages" "$later" "$@"
    echo "$variable=$tag"
  fi
}
