#!/usr/bin/env bash
# Base image for the `observability` compose profile (only what is missing), like
# bootstrap_peers.sh: PROMETHEUS_IMAGE (default the official prom/prometheus) is used when
# present or pullable; otherwise a local stand-in is built from `debootstrap --variant=minbase
# bookworm` with Debian's prometheus package (which has promtool), set up like the official
# image (entrypoint prometheus, user nobody, data in /prometheus), and recorded in
# .images.observability.env, which the Makefile and e2e read. Run only when the profile is
# used, so a plain `make up` stays as fast as before. Needs the engine bootstrap.sh set up.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGES_ENV=.images.observability.env
LOG_PREFIX=bootstrap-observability
# Bump when the stand-in recipe below changes (the tag also follows the host CA bundle).
RECIPE=2
# shellcheck source=scripts/standin.sh
. scripts/standin.sh

# The official image's layout, so compose.yaml serves both unchanged.
prometheus_layout() { # root
  mkdir -p "$1/prometheus" "$1/etc/prometheus"
  chroot "$1" chown nobody:nogroup /prometheus
  # The classic web UI loads one bundled file of libjs-moment-timezone; its 212 MB of raw
  # zone data (and the translations) are never read.
  rm -rf "$1/usr/share/javascript/moment-timezone/data" "$1/usr/share/locale"/*
}
STANDIN_FIXUP=prometheus_layout

# Debian's prometheus (postinst adds a user) configures reliably only through apt-get;
# wget is for the health check, as busybox's is in the official image.
prometheus=$(resolve PROMETHEUS_IMAGE "${PROMETHEUS_IMAGE:-prom/prometheus:v3.5.0}" prometheus \
  "ca-certificates,wget" prometheus \
  --change 'USER nobody' --change 'WORKDIR /prometheus' --change 'EXPOSE 9090' \
  --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
  --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]')
printf '%s\n' "$prometheus" >"$IMAGES_ENV"
log "image ready (${prometheus#*=})"
