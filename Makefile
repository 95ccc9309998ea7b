# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# Extra arguments for `corral serve`, e.g. `make run ARGS="--listen 0.0.0.0:8080"`.
ARGS ?=

.PHONY: run build test lint test-rust test-browser openapi bench clean

## Build and start Corral on SQLite in ./corral-data (installs what is missing).
run:
	@scripts/deps.sh run
	$(CARGO) build --release -p corral -p corral-agent
	./target/release/corral serve $(ARGS)

build:
	$(CARGO) build --release -p corral -p corral-agent

## Every check CI runs: formatting, lints, Rust tests on SQLite and PostgreSQL, browser tests.
test: lint test-rust test-browser

lint:
	@scripts/deps.sh test
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	@scripts/deps.sh test
	# The sandbox tests bind-mount the agent binary into their sandboxes.
	$(CARGO) build -p corral-agent
	$(CARGO) test --workspace

test-browser:
	@scripts/deps.sh test
	$(CARGO) build -p corral
	cd tests/browser && npm ci --no-audit --no-fund && npm test

## Rewrite openapi.json after an intended API change.
openapi:
	CORRAL_UPDATE_OPENAPI=1 $(CARGO) test -p corral-server --test it committed_openapi_snapshot_is_current

## Benchmarks against baselines measured in the same run; see bench/README.md.
bench:
	bash bench/run.sh

clean:
	$(CARGO) clean
