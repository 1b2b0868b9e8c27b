#!/usr/bin/env bash
# Wait until every container of the compose project is healthy (one-shot ones: exited 0), or fail
# after a deadline.
# (`up --wait` would do this, but docker-compose 1.29 does not have it.)
# Usage: wait_healthy.sh "<compose command>" [seconds] [service=count ...]: each named
# service must also have that many containers (replicas started with --scale).
set -euo pipefail
compose=$1 deadline=$((SECONDS + ${2:-120}))
shift $(( $# >= 2 ? 2 : $# ))
while :; do
  ids=$($compose ps -q)
  unhealthy=0
  for id in $ids; do
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}:{{.State.ExitCode}}{{end}}' "$id")
    # A one-shot container (the cluster profile's redis-cluster-init) counts once it exited 0.
    case $state in healthy|running:*|exited:0) ;; *) unhealthy=$((unhealthy + 1)) ;; esac
  done
  for want in "$@"; do
    have=$($compose ps -q "${want%%=*}" | grep -c . || true)
    [ "$have" -ge "${want#*=}" ] || unhealthy=$((unhealthy + 1))
  done
  if [ -n "$ids" ] && [ $unhealthy = 0 ]; then echo "all containers healthy"; exit 0; fi
  if [ $SECONDS -ge $deadline ]; then
    echo "not healthy after ${2:-120}s:" >&2; $compose ps >&2; $compose logs --tail=30 >&2; exit 1
  fi
  sleep 1
done
