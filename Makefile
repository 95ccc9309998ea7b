# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# Extra arguments for `corral serve`, e.g. `make run ARGS="--listen 0.0.0.0:8080"`.
ARGS ?=

.PHONY: run build agent test lint test-rust test-browser test-schemathesis openapi bench clean

## Build and start Corral on SQLite in ./corral-data (installs what is missing).
run:
	@scripts/deps.sh run
	$(CARGO) build --release -p corral
	@$(MAKE) --no-print-directory agent
	./target/release/corral serve $(ARGS)

build:
	$(CARGO) build --release -p corral
	@$(MAKE) --no-print-directory agent

## The in-sandbox agent, statically linked (it runs inside any image), next to corral.
AGENT_STATIC = target/static/x86_64-unknown-linux-gnu/release/corral-agent
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p corral-agent \
	  --target x86_64-unknown-linux-gnu --target-dir target/static
	mkdir -p target/release && install -m 755 $(AGENT_STATIC) target/release/corral-agent

## Every check CI runs: formatting, lints, Rust tests on SQLite and PostgreSQL, browser tests,
## and schemathesis against the live server on both backends (no 5xx).
test: lint test-rust test-browser test-schemathesis

lint:
	@scripts/deps.sh test
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	@scripts/deps.sh test
	# The sandbox tests bind-mount the agent into their sandboxes: the static
	# build that ships (the debug build, target/debug/corral-agent, is the
	# fallback when CORRAL_AGENT_BIN is unset, as under a bare `cargo test`).
	@$(MAKE) --no-print-directory agent
	$(CARGO) build -p corral-agent
	CORRAL_AGENT_BIN=$(CURDIR)/$(AGENT_STATIC) $(CARGO) test --workspace

test-browser:
	@scripts/deps.sh test
	$(CARGO) build -p corral
	cd tests/browser && npm ci --no-audit --no-fund && npm test

## Fuzz the live API (SQLite, then PostgreSQL) with a bounded schemathesis run; any 5xx fails.
test-schemathesis:
	@scripts/deps.sh test
	$(CARGO) build -p corral
	@$(MAKE) --no-print-directory agent
	CORRAL_BIN=$${CARGO_TARGET_DIR:-target}/debug/corral scripts/schemathesis.sh

## Rewrite openapi.json after an intended API change.
openapi:
	CORRAL_UPDATE_OPENAPI=1 $(CARGO) test -p corral-server --test it committed_openapi_snapshot_is_current

## Benchmarks against baselines measured in the same run; see bench/README.md.
bench:
	bash bench/run.sh

clean:
	$(CARGO) clean
