.PHONY: demo test lint images bench

# The demo: Postgres and Redis come up through testcontainers.
demo:
	eval "$$(scripts/env.sh)" && go run ./examples/quickstart

# Every test, integration tests against real servers included, with the race detector.
test:
	scripts/test.sh

lint:
	test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	go vet ./...
	staticcheck ./...

# Images built from Debian packages, for machines without a registry.
images:
	scripts/build-images.sh

# The benchmark program: one run against the harness, results in bench-results.json and
# bench-results/*.svg (see docs/BENCHMARKS.md).
bench:
	eval "$$(scripts/env.sh)" && go run ./cmd/pgcache-bench
