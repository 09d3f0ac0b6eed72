#!/bin/bash
# Runs the whole test suite, integration tests included, against real Postgres and
# Redis started through testcontainers. Extra arguments go to `go test`.
#
# The repository holds five modules (see docs/ARCHITECTURE.md): the library (.), its
# Prometheus and OpenTelemetry integrations (extra), the harness and the tests against
# real servers (integration), the worker and the benchmark program (cmd), and the
# examples (examples). Each is tested in turn; the
# script fails if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/env.sh)"
rc=0
for m in . extra integration cmd examples; do
	go test -C "$m" -race -count=1 -timeout 30m ${GOTESTFLAGS:-} "$@" ./... || rc=1
done
exit "$rc"
