#!/bin/bash
# Builds the servers' images from Debian packages for machines that cannot pull from an
# image registry (see "Air-gapped / no registry" in the README):
#
#   postgres  PostgreSQL 17 (the official postgres:17 that the harness defaults to)
#   redis     Redis 8 (closest to the default redis:7.4)
#   varnish   Varnish Cache 7 with varnish-modules, for vmod xkey (the default varnish:7.7
#             ships both)
#
# Each is a Debian trixie root filesystem made with mmdebstrap and imported with docker
# import. Postgres and Redis share one root filesystem and the entrypoint in
# scripts/images; Varnish has one of its own and runs varnishd as the harness starts it.
# Each tag carries a digest of that image's recipe (the functions below that make it and
# the files they upload), so changing one recipe rebuilds that image only. Nothing is
# done for a tag that already exists, so the build happens once per machine.
#
# Usage: scripts/build-images.sh [image...]        builds those of the named images
#                                                  (default: all) that are missing and
#                                                  prints the environment that selects them
#        FORCE=1 scripts/build-images.sh [image...] rebuilds
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=trixie
pg_major=17

# rootfs OUT PACKAGES [mmdebstrap option...] makes a root filesystem tarball.
rootfs() {
	local out=$1 packages=$2
	shift 2
	mmdebstrap --quiet --variant=apt \
		--include="$packages" \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		"$@" "$suite" "$out" http://deb.debian.org/debian >&2
}

build_postgres_redis() {
	echo >&2 "build-images: building a $suite rootfs with postgresql-$pg_major and redis-server"
	rootfs "$work/postgres-redis.tar" "postgresql-$pg_major,redis-server" \
		--customize-hook="rm -rf \"\$1\"/var/lib/postgresql/$pg_major/main \"\$1\"/etc/postgresql/$pg_major/main" \
		--customize-hook="upload $here/images/entrypoint.sh /usr/local/bin/docker-entrypoint.sh" \
		--customize-hook='chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh' \
		--customize-hook='mkdir -p "$1"/docker-entrypoint-initdb.d "$1"/data'
	local path=/usr/lib/postgresql/$pg_major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	docker import \
		--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
		--change 'CMD ["postgres"]' \
		--change "ENV PATH=$path" \
		--change 'ENV PGDATA=/var/lib/postgresql/data' \
		--change 'ENV LANG=C.UTF-8' \
		--change 'EXPOSE 5432' \
		"$work/postgres-redis.tar" "$pg_image" >&2
	docker import \
		--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
		--change 'CMD ["redis-server"]' \
		--change "ENV PATH=$path" \
		--change 'WORKDIR /data' \
		--change 'ENV IMAGE_SERVER=redis' \
		--change 'EXPOSE 6379' \
		"$work/postgres-redis.tar" "$redis_image" >&2
}

# The package's service is not started (no init in a container); varnishd runs in the
# foreground with the VCL and the listen address the harness gives it, as root, and drops
# to the package's vcache user itself.
build_varnish() {
	echo >&2 "build-images: building a $suite rootfs with varnish and varnish-modules"
	rootfs "$work/varnish.tar" "varnish,varnish-modules" \
		--customize-hook='mkdir -p "$1"/etc/varnish'
	docker import \
		--change 'CMD ["varnishd", "-F", "-f", "/etc/varnish/default.vcl", "-a", ":80", "-s", "malloc,256m"]' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV LANG=C.UTF-8' \
		--change 'EXPOSE 80' \
		"$work/varnish.tar" "$varnish_image" >&2
}

# rev FUNCTION [FILE...] is the digest of a recipe: the suite, the function and the
# rootfs function, and the files it uploads.
rev() {
	local f=$1
	shift
	{ echo "$suite"; declare -f rootfs "$f"; cat "$@"; } | sha256sum | cut -c1-10
}
pr_rev=$(rev build_postgres_redis "$here/images/entrypoint.sh")
pg_image="pgcache-local/postgres:$pg_major-$pr_rev"
redis_image="pgcache-local/redis:8-$pr_rev"
varnish_image="pgcache-local/varnish:7-$(rev build_varnish)"

have() { docker image inspect "$1" >/dev/null 2>&1; }

# want: the recipes to run and the export lines to print, for the images asked for.
[ $# -gt 0 ] || set -- postgres redis varnish
recipes=() exports=() images=()
for name in "$@"; do
	case $name in
	postgres) exports+=("PGCACHE_POSTGRES_IMAGE=$pg_image") images+=("$pg_image") ;;
	redis) exports+=("PGCACHE_REDIS_IMAGE=$redis_image") images+=("$redis_image") ;;
	varnish) exports+=("PGCACHE_VARNISH_IMAGE=$varnish_image") images+=("$varnish_image") ;;
	*)
		echo >&2 "build-images: unknown image $name (want postgres, redis or varnish)"
		exit 2
		;;
	esac
	case $name in
	postgres | redis) recipe=build_postgres_redis ;;
	varnish) recipe=build_varnish ;;
	esac
	if [ -n "${FORCE:-}" ] || ! have "${images[-1]}"; then
		[[ " ${recipes[*]} " == *" $recipe "* ]] || recipes+=("$recipe")
	fi
done

if [ ${#recipes[@]} -gt 0 ]; then
	if ! command -v mmdebstrap >/dev/null; then
		echo >&2 "build-images: installing mmdebstrap"
		apt-get update -qq >&2
		apt-get install -y -qq mmdebstrap >&2
	fi
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	for recipe in "${recipes[@]}"; do
		"$recipe"
	done
	# Images of earlier revisions of a rebuilt recipe are of no further use.
	for recipe in "${recipes[@]}"; do
		case $recipe in
		build_postgres_redis) keep=("$pg_image" "$redis_image") ;;
		build_varnish) keep=("$varnish_image") ;;
		esac
		for image in "${keep[@]}"; do
			docker images --format '{{.Repository}}:{{.Tag}}' "${image%%:*}" |
				grep -vxF "$image" | xargs -r docker rmi >&2 || true
		done
	done
fi
echo "export ${exports[*]}"
