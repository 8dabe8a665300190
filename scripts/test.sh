#!/usr/bin/env bash
# Sets up (idempotently) and runs the whole test suite, real vLLM and real embedding model included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# pytest starts with tcmalloc and Intel OpenMP loaded, as `lift-local` does (lift_local/cpu_engine.py): the
# engines and models that tests run in pytest's processes run as lift-local's do. tests/conftest.py puts
# LD_PRELOAD back as it was for the programs the tests start.
exec .venv/bin/python -c '
import os, sys
from lift_local.cpu_engine import preloaded_environment
os.execve(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]], preloaded_environment())
' "$@"
