#!/bin/bash
# Builds Postgres and Redis images from Debian packages for machines that cannot pull
# from an image registry (see "Air-gapped / no registry" in the README).
#
# One Debian trixie root filesystem with PostgreSQL 17 and Redis 8 (the versions the
# official images the harness defaults to, postgres:17 and redis:7.4, come closest to)
# is made with mmdebstrap and imported twice, once per server, with the entrypoint in
# scripts/images. Nothing is done for a tag that already exists, so the build happens
# once per machine.
#
# Usage: scripts/build-images.sh            builds what is missing and prints the
#                                           environment that selects the images
#        FORCE=1 scripts/build-images.sh    rebuilds
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# The tag carries a digest of this script and the entrypoint, so changing either rebuilds.
rev=$(cat "$here/build-images.sh" "$here/images/entrypoint.sh" | sha256sum | cut -c1-10)
suite=trixie
pg_major=17
pg_image="pgcache-local/postgres:$pg_major-$rev"
redis_image="pgcache-local/redis:8-$rev"

have() { docker image inspect "$1" >/dev/null 2>&1; }

if [ -z "${FORCE:-}" ] && have "$pg_image" && have "$redis_image"; then
	echo "export PGCACHE_POSTGRES_IMAGE=$pg_image PGCACHE_REDIS_IMAGE=$redis_image"
	exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
	echo >&2 "build-images: installing mmdebstrap"
	apt-get update -qq >&2
	apt-get install -y -qq mmdebstrap >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo >&2 "build-images: building a $suite rootfs with postgresql-$pg_major and redis-server"
mmdebstrap --quiet --variant=apt \
	--include="postgresql-$pg_major,redis-server" \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--customize-hook="rm -rf \"\$1\"/var/lib/postgresql/$pg_major/main \"\$1\"/etc/postgresql/$pg_major/main" \
	--customize-hook="upload $here/images/entrypoint.sh /usr/local/bin/docker-entrypoint.sh" \
	--customize-hook='chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh' \
	--customize-hook='mkdir -p "$1"/docker-entrypoint-initdb.d "$1"/data' \
	"$suite" "$work/rootfs.tar" http://deb.debian.org/debian >&2

path=/usr/lib/postgresql/$pg_major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
docker import \
	--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
	--change 'CMD ["postgres"]' \
	--change "ENV PATH=$path" \
	--change 'ENV PGDATA=/var/lib/postgresql/data' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'EXPOSE 5432' \
	"$work/rootfs.tar" "$pg_image" >&2
docker import \
	--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
	--change 'CMD ["redis-server"]' \
	--change "ENV PATH=$path" \
	--change 'WORKDIR /data' \
	--change 'ENV IMAGE_SERVER=redis' \
	--change 'EXPOSE 6379' \
	"$work/rootfs.tar" "$redis_image" >&2
# Images of earlier revisions of this script are of no further use.
docker images --format '{{.Repository}}:{{.Tag}}' 'pgcache-local/*' |
	grep -vxF -e "$pg_image" -e "$redis_image" | xargs -r docker rmi >&2 || true
echo "export PGCACHE_POSTGRES_IMAGE=$pg_image PGCACHE_REDIS_IMAGE=$redis_image"
