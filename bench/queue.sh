#!/usr/bin/env bash
# Queue throughput benchmark (bench/queue-bench): SQLite, PostgreSQL and
# Redis, each against a raw-statement floor measured in the same run.
# Knobs: flags after the script name or QUEUE_BENCH_* variables (see
# `bench/queue.sh --help`). Writes bench/results/queue.md. Builds into
# $CARGO_TARGET_DIR when set.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet -p queue-bench -- "$@"
