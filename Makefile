.PHONY: demo test lint images bench worker-image

# The demo: Postgres and Redis come up through testcontainers.
demo:
	eval "$$(scripts/env.sh)" && go run -C examples ./quickstart

# Every test, integration tests against real servers included, with the race detector.
test:
	scripts/test.sh

# The repository's modules: the library, its Prometheus and OpenTelemetry integrations,
# the harness and server tests, the commands, the examples (see docs/ARCHITECTURE.md).
MODULES = . extra integration cmd examples

lint:
	test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	for m in $(MODULES); do (cd $$m && go mod tidy -diff && go vet ./... && staticcheck ./...) || exit 1; done

# Images built from Debian packages, for machines without a registry.
images:
	scripts/build-images.sh

# The benchmark program: one run against the harness, Varnish (the image scripts/env.sh
# builds) included, results in bench-results.json and bench-results/*.svg (see
# docs/BENCHMARKS.md). Without Varnish: go run -C cmd ./pgcache-bench -varnish=false.
bench:
	eval "$$(scripts/env.sh)" && go run -C cmd ./pgcache-bench -out ../bench-results.json -plots ../bench-results

# The worker's image, from scratch: a static binary, no base image (cmd/pgcache-worker/Dockerfile).
worker-image:
	scripts/worker-image.sh pgcache-worker:dev
