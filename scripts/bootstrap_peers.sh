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
LOG_PREFIX=bootstrap-peers
# Bump when the stand-in recipe below changes (the tag also follows the host CA bundle).
RECIPE=1
# shellcheck source=scripts/standin.sh
. scripts/standin.sh

NODE_ENV='ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt'
# npm's many node-* packages do not configure inside debootstrap; apt-get orders them.
node=$(resolve NODE_IMAGE "${NODE_IMAGE:-node:22-slim}" node "nodejs,ca-certificates" npm \
  --change "$NODE_ENV" --change 'CMD ["node"]')
php=$(resolve PHP_IMAGE "${PHP_IMAGE:-php:8.3-cli}" php "php-cli,php-redis,ca-certificates" "" \
  --change "$NODE_ENV" --change 'CMD ["php"]')
printf '%s\n%s\n' "$node" "$php" >"$IMAGES_ENV"
log "images ready (${node#*=}, ${php#*=})"
