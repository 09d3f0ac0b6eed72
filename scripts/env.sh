#!/bin/bash
# Prints the environment the tests and the demo need on this machine, as export lines:
#
#	eval "$(scripts/env.sh)"
#
# With a registry in reach, the official images are used and nothing is printed for
# them. Without one, the images are built from Debian packages (scripts/build-images.sh)
# and testcontainers' reaper, whose image cannot be pulled either, is turned off; the
# harness removes the containers it starts itself. Variables already set are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if ! docker info >/dev/null 2>&1; then
	echo >&2 "env: no Docker engine reachable; integration tests will be skipped (failed in CI)"
	exit 0
fi

pullable() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }
if [ -z "${PGCACHE_POSTGRES_IMAGE:-}${PGCACHE_REDIS_IMAGE:-}" ]; then
	if ! pullable postgres:17 || ! pullable redis:7.4; then
		echo >&2 "env: no image registry reachable; using images built from Debian packages"
		"$here/build-images.sh" postgres redis
	fi
fi
if [ -z "${PGCACHE_VARNISH_IMAGE:-}" ] && ! pullable varnish:7.7; then
	"$here/build-images.sh" varnish
fi
# testcontainers' reaper: turned off when its image can be neither found nor pulled,
# whoever chose the other images. Keep the tag in step with testcontainers-go's
# ReaperDefaultImage (internal/config) when upgrading it.
ryuk=testcontainers/ryuk:0.14.0
if [ -z "${TESTCONTAINERS_RYUK_DISABLED:-}" ] && ! pullable "$ryuk"; then
	echo "export TESTCONTAINERS_RYUK_DISABLED=true"
fi

# Inside a container testcontainers reaches published ports through the default gateway,
# which is right when the Docker socket is the host's. When the engine runs in this
# container's own network namespace (its docker0 bridge is here), the ports are on
# loopback.
if [ -z "${TESTCONTAINERS_HOST_OVERRIDE:-}" ] && [ -f /.dockerenv ] && [ -e /sys/class/net/docker0 ]; then
	echo "export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1"
fi
