#!/usr/bin/env bash
# Sets up (idempotently) and runs the whole test suite, real vLLM and real embedding model included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
