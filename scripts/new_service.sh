#!/usr/bin/env bash
# make new-service NAME=orders [DEST=~/shop]: copy services/template_service as
# DEST/services/NAME, renamed, plus what its Dockerfile builds from (lib/pubsub_rpc, the pins,
# .dockerignore) when DEST is another project. Never overwrites. See docs/template.md.
set -euo pipefail

name=${1:-} dest=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "new-service: $*" >&2; exit 1; }
[[ $name =~ ^[a-z][a-z0-9_]*$ ]] || die "NAME must be a lower-case Python identifier (e.g. orders), not '$name'"
dest=${dest:-$root}
mkdir -p "$dest/services"
dest=$(cd "$dest" && pwd)
target=$dest/services/$name
[ -e "$target" ] && die "$target exists"

mkdir "$target"
for file in "$root"/services/template_service/*; do
  [ -f "$file" ] && sed "s/template_service/$name/g" "$file" >"$target/$(basename "$file")"
done
echo "created services/$name in $dest"

copy() { # path relative to the repository root; skipped when DEST has it already
  if [ ! -e "$dest/$1" ]; then
    mkdir -p "$(dirname "$dest/$1")"
    cp -r "$root/$1" "$dest/$1"
    echo "copied $1"
  fi
}
if [ "$dest" != "$root" ]; then
  copy lib/pubsub_rpc/pyproject.toml
  copy lib/pubsub_rpc/src
  find "$dest/lib/pubsub_rpc" \( -name __pycache__ -o -name "*.egg-info" \) -prune -exec rm -rf {} +
  copy .dockerignore
  # Whatever else the Dockerfile copies from the repository root (the dependency pins).
  for path in $(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' "$target/Dockerfile"); do
    case $path in services/* | lib/*) ;; *) copy "$path" ;; esac
  done
fi
cat <<NEXT
next: your actions in services/$name/actions.py, then from $dest:
  docker build --build-arg PYTHON_IMAGE -f services/$name/Dockerfile -t $name .
NEXT
