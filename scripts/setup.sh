#!/usr/bin/env bash
# Everything `make test` / `make dev` need on the host, installed only where missing:
# Debian packages (as root, via apt), the virtual environment, the Node.js interop peer and
# the bench's framework peers (bench/peers).
# Idempotent: a second run is a few checks and no downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v php >/dev/null || missing+=(php-cli)
{ command -v php >/dev/null && php -r 'exit(extension_loaded("redis") ? 0 : 1);'; } || missing+=(php-redis)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing with apt: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing: ${missing[*]}. Install them, e.g.: sudo apt-get install ${missing[*]}"
    exit 1
  fi
fi

stamp=.venv/.installed
want=$(cat requirements.txt requirements-dev.txt lib/pubsub_rpc/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies into .venv (from the hashed lock, requirements-dev.txt)"
  # Exactly the locked files: every hash checked, nothing unlisted pulled in.
  .venv/bin/pip install -q --require-hashes --no-deps -r requirements-dev.txt
  # The library itself, editable, on top: its dependencies are already in the lock.
  .venv/bin/pip install -q --no-deps -e lib/pubsub_rpc
  echo "$want" >"$stamp"
fi

# npm packages: the interop peer, and the bench's peers (NestJS, Moleculer; bench only, ~10 s).
npm_ci() {
  local dir=$1 what=$2
  if [ ! -f "$dir/node_modules/.stamp" ] || [ "$(sha256sum <"$dir/package-lock.json")" != "$(cat "$dir/node_modules/.stamp")" ]; then
    log "installing $what (npm ci in $dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
    sha256sum <"$dir/package-lock.json" >"$dir/node_modules/.stamp"
  fi
}
npm_ci interop/node "the Node.js interop peer"
npm_ci bench/peers "the bench's framework peers"
