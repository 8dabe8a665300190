"""`lift-local run --ray` on a real Ray cluster that the tests start on this machine (loopback address, 2 CPUs),
with SmolLM2 in vLLM on one replica: the same curated records as the in-process run, a replica killed
mid-phase is restarted and its work redone, an interrupted run asks only for the replies it lacks, and a
failing replica stops the run with lift-local's error."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from conftest import LIFT_LOCAL, SMOLLM

from lift_local.cli import main
from lift_local.cpu_engine import preload_libraries
from lift_local.records import read_records

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
# Ray takes 127.0.0.1 for "this machine" and advertises its network address instead; this keeps it on
# loopback. Reaping: a worker that dies takes its child processes (the vLLM engine) with it.
# Authentication: a token of the tests' own for the cluster and its clients. Otherwise both take
# ~/.ray/auth_token when present (any local `ray.init()` writes one), and a stale one kept the driver out
# of its own cluster ("InvalidAuthToken").
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "true",
       "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
GREEDY = [  # every phase greedy and short, so that two runs must agree; no judge retries (they sample)
    "--set", f"models.rewriter='{SMOLLM}'", "--set", f"models.judge='{SMOLLM}'",
    "--set", "expand.task='code'", "--set", "expand.rounds=1",
    "--set", "enhance.temperature=0", "--set", "expand.temperature=0", "--set", "quality.temperature=0",
    "--set", "enhance.max_tokens=48", "--set", "expand.max_tokens=48", "--set", "quality.retries=0",
    "--set", "variety.keep=0.75", "--set", "quality.top=4",
]

PHASES = ("dedup", "enhance", "expand", "decontaminate", "variety", "quality")


def ONLY(phase: str) -> list[str]:  # noqa: N802 (reads as a constant in an argument list)
    """`--skip` for every phase but `phase`: a test of one phase on the cluster starts no replica for the
    others (each phase's replicas start afresh, some loading the embedder, ~10 s)."""
    return [arg for other in PHASES if other != phase for arg in ("--skip", other)]


@dataclass
class Cluster:
    address: str
    folder: str  # its processes' temp folder, on their command lines

    def processes(self) -> list[psutil.Process]:
        heads = [p for p in psutil.process_iter(["cmdline"]) if self.folder in " ".join(p.info["cmdline"] or ())]
        return heads + [child for head in heads for child in _children(head)]

    def replicas(self) -> list[psutil.Process]:
        """Its replicas' processes (Ray Data names an actor's process after its class)."""
        return [p for p in self.processes() if _cmdline(p).startswith("ray::MapWorker(MapBatches(Replica))")]


@pytest.fixture(scope="module")
def cluster():
    """A Ray head node on 127.0.0.1 with 2 CPUs, started with `ray start` in a folder of its own, so that
    teardown stops exactly its processes."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--disable-usage-stats", "--include-dashboard=false", f"--temp-dir={folder}"],
                   env=ENV, check=True, capture_output=True, timeout=120)
    started = Cluster(f"127.0.0.1:{port}", folder)
    yield started
    processes = started.processes()
    for process in processes:
        process.terminate()
    # Some process of the cluster outlives SIGTERM: the 30 s this waited were always used up, for nothing.
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:
        process.kill()
    shutil.rmtree(folder, ignore_errors=True)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _stored(cache: Path) -> dict[str, int]:
    """Every stored reply's key -> its rowid in its file (the main cache and the replicas' shards)."""
    found = {}
    for path in [cache / "replies.sqlite", *sorted((cache / "shards").glob("replies-*.sqlite"))]:
        if path.is_file():
            with sqlite3.connect(path) as db:
                try:
                    found.update(db.execute("SELECT key, rowid FROM replies"))
                except sqlite3.OperationalError:  # the table is not there yet
                    pass
    return found


def _run(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*LIFT_LOCAL, "run", *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _run_here(*args: str) -> None:
    """`lift-local run` without Ray, in this process: the in-process run the cluster's must equal (its LLM
    phases on the session's engine, which is already running)."""
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exit_code == 0, result.output


def _wait_for(condition, process: subprocess.Popen, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=2400)  # on a busy 2-core machine an engine may take minutes to start
    assert process.returncode == 0, (out + err)[-3000:]
    return out


def test_ray_run_curates_what_the_in_process_run_does_though_a_replica_dies(tmp_path, real_sample, cluster, smollm):
    sample = str(real_sample("code_alpaca_2k.json", list(range(300, 308))))
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    _run_here(sample, "--out", str(local), *GREEDY)

    process = _run(sample, "--out", str(on_ray), "--ray", cluster.address, *GREEDY)
    # Mid-phase (the first LLM phase has stored some replies but not all), kill the replica's process.
    _wait_for(lambda: len(_stored(on_ray / "cache")) >= 2 and cluster.replicas(), process)
    (replica,) = cluster.replicas()
    # On a CPU the replica starts with tcmalloc and Intel OpenMP loaded, and its engine runs in its process.
    assert not any("EngineCore" in _cmdline(child) for child in _children(replica))
    assert {Path(library).name.split(".")[0] for library in preload_libraries()} <= {
        Path(mapped.path).name.split(".")[0] for mapped in replica.memory_maps()}
    replica.kill()
    output = _finish(process)

    assert "[6/6] quality" in output
    phases = [json.loads((run / "manifest.json").read_text())["phases"] for run in (local, on_ray)]
    assert [[(p["records_in"], p["records_out"]) for p in run.values()] for run in phases] == [
        [(p["records_in"], p["records_out"]) for p in phases[0].values()]] * 2
    curated = [read_records(run / "curated.jsonl") for run in (local, on_ray)]
    written = [[(r.id, r.output, {k: v for k, v in r.meta["judge"].items() if not k.startswith("expected")}) for r in run]
               for run in curated]
    assert written[0] == written[1]
    # Logprobs differ with the batch an engine runs (CPU float sums, and a digit at the edge of the top-k can
    # enter or leave): expected totals (0-40) agree to within half a point (CI once saw 0.33), and rank alike.
    assert [r.meta["judge"]["expected_total"] for r in curated[1]] == pytest.approx(
        [r.meta["judge"]["expected_total"] for r in curated[0]], abs=0.5)
    assert len(curated[0]) == 4
    assert not list((on_ray / "cache" / "shards").glob("*.sqlite"))  # every shard folded into the run's cache
    assert not (on_ray / "cache" / "staged").exists()  # the records replicas staged, gone once written


def test_embeddings_on_two_replicas_select_what_one_process_selects(tmp_path, real_sample, cluster):
    sample = str(real_sample("dolly_3k.json", list(range(40))))
    only_variety = [*ONLY("variety"), "--set", "variety.keep=0.5"]
    _run_here(sample, "--out", str(tmp_path / "local"), *only_variety)
    _finish(_run(sample, "--out", str(tmp_path / "ray"), *only_variety, "--ray", cluster.address, "--replicas", "2"))
    local, on_ray = (read_records(tmp_path / run / json.loads((tmp_path / run / "manifest.json").read_text())["phases"]
                                  ["variety"]["output"]) for run in ("local", "ray"))
    assert [r.id for r in on_ray] == [r.id for r in local] and len(local) == 20
    assert [r.meta["row_variance"] for r in on_ray] == pytest.approx([r.meta["row_variance"] for r in local], rel=1e-4)


# A driver of its own (Ray reads the loopback setting as it is imported): maps 40 records on two replicas with
# dedup's map (hashes only: no model), and checks what it got back against the same map in process.
STAGING_DRIVER = """
import sys
from pathlib import Path
from lift_local.config import ClusterConfig
from lift_local.phases import Local
from lift_local.phases.dedup import Dedup, DedupParams
from lift_local.ray_executor import RayExecutor, StagedRecord
from lift_local.records import read_records
from lift_local.workbench import Workbench

sample, address, cache = sys.argv[1:]
records = read_records(sample)
step = Dedup(DedupParams(semantic=0)).map
with Workbench(Path(cache)) as bench:
    expected = Local(bench).map(step, records)
    with RayExecutor(ClusterConfig(ray=address, replicas=2, batch_size=16), bench) as executor:
        mapped = executor.map(step, records)
        assert all(isinstance(m.record, StagedRecord) for m in mapped), "the driver got records, not handles"
        assert len({m.record.path for m in mapped}) >= 3, "not one staging file per block of at most 16"
        assert [m.record.load() for m in mapped] == [e.record for e in expected]
        assert [m.features.exact for m in mapped] == [e.features.exact for e in expected]
        # Handles, with what select gave them, go back to the replicas, which read the records.
        marked = [m.record.with_meta(mark=i) for i, m in enumerate(mapped)]
        again = executor.map(step, marked)
        assert [m.record.load() for m in again] == [e.record.with_meta(mark=i) for i, e in enumerate(expected)]
        held = executor.hold(records)
        assert all(isinstance(r, StagedRecord) for r in held) and [r.load() for r in held] == records
assert not (Path(cache) / "staged").exists(), "staging files left after the executor ended"
print("ok")
"""


def test_mapped_records_stay_on_the_cluster_and_the_driver_holds_where_they_are(tmp_path, real_sample, cluster):
    sample = str(real_sample("dolly_3k.json", list(range(40))))
    done = subprocess.run([sys.executable, "-c", STAGING_DRIVER, sample, cluster.address, str(tmp_path / "cache")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_interrupted_ray_run_asks_only_for_the_missing_replies(tmp_path, real_sample, cluster):
    sample = str(real_sample("dolly_3k.json", list(range(12))))
    out = tmp_path / "run"
    argv = [sample, "--out", str(out), "--ray", cluster.address, *ONLY("enhance"),
            "--set", f"models.rewriter='{SMOLLM}'", "--set", "enhance.max_tokens=128"]
    process = _run(*argv)
    _wait_for(lambda: len(_stored(out / "cache")) >= 3, process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 143
    time.sleep(5)  # the replica, cut off from its driver, is stopped by Ray
    before = set(_stored(out / "cache"))
    assert 3 <= len(before) < 12

    _finish(_run(*argv))
    after = _stored(out / "cache")
    assert len(after) == 12
    # Stored again, a reply would have a new row (INSERT OR REPLACE): the first rows are the replies kept.
    assert {key for key, row in after.items() if row <= len(before)} == before
    assert len(read_records(out / "curated.jsonl")) == 12


def test_a_failing_replica_stops_the_run_with_lift_locals_error(tmp_path, real_sample, cluster):
    sample = str(real_sample("dolly_3k.json", list(range(4))))
    missing = tmp_path / "no-such-model"
    process = _run(sample, "--out", str(tmp_path / "run"), "--ray", cluster.address, *ONLY("quality"),
                   "--set", f"models.judge='{missing}'")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 1
    assert "Error: a Ray worker failed:" in err and str(missing) in err
    assert "Traceback" not in err


def test_a_client_without_the_clusters_token_is_told_what_to_check(tmp_path, real_sample, cluster):
    sample = str(real_sample("dolly_3k.json", list(range(2))))
    process = subprocess.run([*LIFT_LOCAL, "run", sample, "--out", str(tmp_path / "run"), "--ray", cluster.address],
                             cwd=REPO, env={**ENV, "RAY_AUTH_TOKEN": "0" * 64}, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 1
    assert f"Error: cannot reach the Ray cluster at '{cluster.address}'" in process.stderr
    assert "RAY_AUTH_TOKEN" in process.stderr and "Traceback" not in process.stderr
    assert not (tmp_path / "run" / "1-dedup.jsonl").exists()
