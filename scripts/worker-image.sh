#!/bin/sh
# Builds the worker's image (cmd/pgcache-worker/Dockerfile) from a static binary built
# here: no base image is pulled. Usage: scripts/worker-image.sh [tag]
set -eu
tag=${1:-pgcache-worker:dev}
root=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -C "$root/cmd" -trimpath -ldflags '-s -w' -o "$ctx/pgcache-worker" ./pgcache-worker
ca=/etc/ssl/certs/ca-certificates.crt
if [ ! -f "$ca" ]; then
	echo "worker-image: $ca is missing: install the ca-certificates package (the image verifies TLS with it)" >&2
	exit 1
fi
cp "$ca" "$ctx/ca-certificates.crt"
cp "$root/cmd/pgcache-worker/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
