#!/usr/bin/env bash
# Sets up (idempotently) and runs the whole LIFT pipeline on the bundled Code Alpaca sample, on CPU, with
# the packaged SmolLM2-135M-Instruct as rewriter and judge and all-MiniLM-L6-v2 as embedder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/lift-local run lift_local/data/code_alpaca_sample.json --out out/demo --config scripts/demo.toml "$@"
