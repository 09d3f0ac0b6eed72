#!/bin/bash
# Entrypoint of the locally built images (see scripts/build-images.sh). It honours the
# environment variables and arguments of the official postgres and redis images that the
# testcontainers modules rely on, so the harness runs unchanged against either.
set -euo pipefail

postgres_main() {
	export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
	local user="${POSTGRES_USER:-postgres}"
	local db="${POSTGRES_DB:-$user}"
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		echo >&2 "error: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)"
		exit 1
	fi
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"

	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		local pwfile
		pwfile=$(mktemp)
		printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
		chown postgres "$pwfile"
		as_postgres initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
			--auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" ${POSTGRES_INITDB_ARGS:-} >/dev/null
		rm -f "$pwfile"
		{
			echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
			echo "host replication all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
		} >>"$PGDATA/pg_hba.conf"
		echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

		# Like the official image: a temporary server on the socket only runs the init
		# scripts, then stops; the real server starts below.
		as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
		if [ "$db" != postgres ]; then
			as_postgres psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres \
				-c "CREATE DATABASE \"$db\"" >/dev/null
		fi
		local f
		for f in /docker-entrypoint-initdb.d/*; do
			case "$f" in
			*.sh) echo "running $f"; . "$f" ;;
			*.sql) echo "running $f"; as_postgres psql -v ON_ERROR_STOP=1 --username="$user" --dbname="$db" -f "$f" ;;
			*) ;;
			esac
		done
		as_postgres pg_ctl -D "$PGDATA" -m fast -w stop
		echo "PostgreSQL init process complete; ready for start up."
	fi
	# docker import cannot set STOPSIGNAL, so turn docker stop's SIGTERM into Postgres'
	# fast shutdown (SIGINT) here, as the official image's STOPSIGNAL does; a smart
	# shutdown would wait for every client to disconnect.
	# setpriv execs Postgres in the background child itself (no function, no subshell),
	# so the signal reaches the postmaster.
	setpriv --reuid=postgres --regid=postgres --init-groups "$@" &
	local pid=$!
	trap 'kill -INT "$pid" 2>/dev/null' TERM INT
	local rc=0
	wait "$pid" || rc=$?
	while kill -0 "$pid" 2>/dev/null; do wait "$pid" || rc=$?; done
	exit "$rc"
}

as_postgres() {
	setpriv --reuid=postgres --regid=postgres --init-groups "$@"
}

redis_main() {
	mkdir -p /data
	chown redis:redis /data
	cd /data
	# The official image turns protected mode off when no config file is given, so
	# clients outside the container can connect.
	if [ "$#" -eq 1 ] || [[ "${2:-}" == --* ]]; then
		set -- "$@" --protected-mode no
	fi
	exec setpriv --reuid=redis --regid=redis --init-groups "$@"
}

shopt -s nullglob
case "${1:-}" in
postgres) postgres_main "$@" ;;
redis-server) redis_main "$@" ;;
-*)
	# Like the official images: bare flags go to the image's own server.
	if [ "${IMAGE_SERVER:-}" = redis ]; then redis_main redis-server "$@"; else postgres_main postgres "$@"; fi
	;;
*) exec "$@" ;;
esac
