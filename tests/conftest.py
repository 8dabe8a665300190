"""Fixtures shared by test modules: the real SmolLM2 engine for `vllm` tests, and fakes behind the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the project's real data sets
SMOLLM = "smollm2-135m-instruct"  # the packaged registry's CPU model
REPO = Path(__file__).resolve().parents[1]
# This checkout's command line, as a user runs it (the `lift-local` script may import another checkout).
LIFT_LOCAL = [sys.executable, "-m", "lift_local"]


def _engines_on_cpus_of_their_own() -> None:
    """On pytest-xdist workers (pyproject.toml runs two), each worker's vLLM engines compute on CPUs of their
    own: in process, in the commands and servers the tests start, on the Ray cluster (all of them inherit
    this environment; a value set by the user wins). vLLM binds an engine's OpenMP threads to every CPU, so
    two workers' engines shared both cores, and each thread waited at every barrier for one that shared its
    core with the other engine. Measured on 2 cores with SmolLM2, two engines at once: each at 0.42 of the
    speed of one alone when both were bound to both cores, at 0.63 on one core each."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...
    if worker is None or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = max(1, len(cpus) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    first = int(worker.removeprefix("gw")) % (len(cpus) // share) * share
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(cpu) for cpu in cpus[first:first + share])


_engines_on_cpus_of_their_own()


def pytest_configure(config):
    """scripts/test.sh starts pytest with tcmalloc and Intel OpenMP loaded, as `lift-local` starts; the
    processes that run tests put LD_PRELOAD back as it was, so that the programs they start (lift-local
    commands, which load the libraries themselves, servers, a browser) start as they would for a user. The
    pytest-xdist controller keeps it for the workers it starts."""
    from lift_local.cpu_engine import relaunched

    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        relaunched()


def engine_processes() -> dict[str, str]:
    """For the tests of what becomes of a vLLM engine's processes, the environment of a `lift-local` that runs
    its engines in processes of their own, as on a GPU (on a CPU it runs them in its own process)."""
    return {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct in an in-process vLLM engine, started once for the whole test session.

    It is the engine `load_chat_model` keeps for this model, so CLI commands run in the same process
    (click's CliRunner) with `--rewriter/--judge smollm2-135m-instruct` reuse it instead of starting another.
    """
    from lift_local.llm.backend import load_chat_model
    from lift_local.llm.inprocess import close_engines

    model = load_chat_model("rewriter", SMOLLM)
    yield model
    close_engines()


@pytest.fixture
def cli_models(monkeypatch):
    """Makes the CLI's models fakes: a test sets `cli_models["judge"] = FakeChat(...)` (or "rewriter"), or a
    dict of fakes by the name a command gives (a jury: `{"a": FakeChat(...), "b": FakeChat(...)}`)."""
    chosen: dict = {}

    def load(role, override=None, **options):
        return chosen[role][override] if isinstance(chosen[role], dict) else chosen[role]

    monkeypatch.setattr("lift_local.llm.backend.load_chat_model", load)
    return chosen


@pytest.fixture
def fake_embedder(monkeypatch):
    """Makes the embedder a `FakeSentenceTransformer` behind the real `Embedder` and its cache; its identity
    differs from the real model's, so no cached real embedding is ever mixed with a fake one."""
    from fakes import FakeSentenceTransformer

    from lift_local import embed

    identity = embed.model_identity
    monkeypatch.setattr(embed, "model_identity", lambda folder: f"fake:{identity(folder)}")
    monkeypatch.setattr(embed.Embedder, "model", property(lambda self: FakeSentenceTransformer()))


@pytest.fixture
def real_sample(tmp_path):
    """Writes chosen records of a real data set in SHARED_DATA to a small Alpaca JSON file in tmp_path."""

    def write(name: str, indices: list[int]) -> Path:
        items = json.loads((SHARED_DATA / name).read_text(encoding="utf-8"))
        path = tmp_path / f"sample_{name}"
        path.write_text(json.dumps([items[i] for i in indices]), encoding="utf-8")
        return path

    return write


def stored_replies(cache: Path) -> int:
    """How many replies the reply cache in the folder `cache` holds."""
    if not (cache / "replies.sqlite").exists():
        return 0
    with contextlib.closing(sqlite3.connect(cache / "replies.sqlite")) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not there yet
            return 0


def server_command(model_dir, port: int) -> list[str]:
    """`vllm serve` as models/README.md recommends for CPU. vllm-cpu's `vllm` console script fails to start
    (it looks up the version of a distribution named "vllm"), so the server module is run directly."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", SMOLLM,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-model-len", "2048",
        "--enforce-eager",
        "--kv-cache-memory-bytes", str(512 * 1024**2),
        "--structured-outputs-config", '{"backend": "guidance", "disable_any_whitespace": true}',
        "--disable-uvicorn-access-log",
    ]  # fmt: skip


@contextlib.contextmanager
def vllm_server(log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real vLLM OpenAI-compatible server of SmolLM2 on a free loopback port, its output in `log_path`:
    yields its URL and process once /health answers; ends its whole process group after.

    In-process engines are shut down first (they restart when next used), so that only one engine runs.
    """
    from lift_local import models
    from lift_local.llm.inprocess import close_engines

    close_engines()
    model_dir = models.ensure_present(models.resolve("judge", SMOLLM))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(server_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm server not healthy after 600 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the engine too, if it outlived the server
        process.wait()


@pytest.fixture(scope="session")
def served_smollm(tmp_path_factory):
    """`vllm_server`, started once for the whole test session: (its URL, its process)."""
    with vllm_server(tmp_path_factory.mktemp("vllm-serve") / "server.log") as served:
        yield served


# Markers of tests that run something real (an engine, a model, a cluster, a browser) or take seconds for
# another reason (child processes, real file systems). Every other test is
# in the fast tier (`scripts/test.sh -m fast`): pure logic and fakes, and it must load no model.
REAL = ("vllm", "model", "ray", "browser", "slow")


# The suite runs on two pytest-xdist workers (pyproject.toml: `-n 2 --dist loadfile --no-loadscope-reorder`):
# each file runs whole on one worker (its module fixtures start once), and the files are handed out in the
# order below as workers free up. The longest first, so that the two workers end together: the Ray tests on
# one worker; the modules on the session's vLLM server next, so that they land together on the other one
# (one server) before any test there starts the in-process engine (starting a server shuts that engine down,
# see `vllm_server`, so it would start twice); then the other tests that run engines of their own.
FIRST = ("test_ray.py", "test_server_failure_vllm.py", "test_llm_backends.py", "test_lifeline_vllm.py",
         "test_interrupt_vllm.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(marker) for marker in REAL):
            item.add_marker(pytest.mark.fast)
    # Stable sort: every other file keeps its place, after these.
    rank = {name: place for place, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


@pytest.fixture(autouse=True)
def _fast_tests_load_no_model(request, monkeypatch):
    """A test of the fast tier that would load a real model fails at once, naming the marker it needs."""
    if request.node.get_closest_marker("fast") is None:
        return

    advice = "this test loads a real model: mark it @pytest.mark.model (or vllm), or give it a fake"

    class Refused(types.ModuleType):
        def __getattr__(self, name):
            raise AssertionError(f"{advice} (vllm.{name})")

    def refuse(self):
        raise AssertionError(f"{advice} ({type(self).__name__})")

    monkeypatch.setattr("lift_local.embed.Embedder.model", property(refuse))
    monkeypatch.setitem(sys.modules, "vllm", Refused("vllm"))
