"""What the benchmark scripts share: the machine a figure was measured on, and a child environment in which
only the benchmark decides how vLLM's engine and OpenMP are set up."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

# Removed from a measured child's environment: vLLM's and OpenMP's settings, and preloaded libraries.
ENGINE_PREFIXES = ("VLLM_", "OMP_", "KMP_", "GOMP_")
ENGINE_VARIABLES = ("LD_PRELOAD",)


def clean_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`environ` without the variables that set up the engine, so the configuration measured decides them."""
    return {key: value for key, value in environ.items()
            if key not in ENGINE_VARIABLES and not key.startswith(ENGINE_PREFIXES)}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = (line.partition(":") for line in text.split("\n\n")[0].splitlines())
    return {name.strip(): value.strip() for name, _, value in fields}


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def machine() -> str:
    """E.g. "2 CPUs (Intel Xeon ..., AVX2), 24 GiB RAM": what a reader needs to compare a figure with theirs."""
    flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    model = _cpuinfo().get("model name") or platform.processor() or platform.machine()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} CPUs ({model}, {isa}), {memory:.0f} GiB RAM"


def load() -> str:
    """The load average over 1 / 5 / 15 minutes, as `uptime` shows it."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())
