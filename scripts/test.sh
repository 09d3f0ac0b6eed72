#!/bin/bash
# Runs the whole test suite, integration tests included, against real Postgres and
# Redis started through testcontainers. Extra arguments go to `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/env.sh)"
exec go test -race -count=1 -timeout 30m ${GOTESTFLAGS:-} "$@" ./...
