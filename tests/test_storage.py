"""What the operating system refuses (a full disk, a read-only folder, a file removed while a run reads it)
is one line that names the path and the cause, with exit 1: no traceback, no partial file, and the same
command resumes once the cause is mended."""

from __future__ import annotations

import errno
import shutil
import subprocess
import textwrap

import pytest
from click.testing import CliRunner
from conftest import LIFT_LOCAL, REPO

from lift_local import records
from lift_local.cli import main
from lift_local.errors import StorageError
from lift_local.records import Record, read_records, write_records
from lift_local.store import Store

NO_SPACE = "No space left on device (free some space and run the same command again: what is finished is kept)"
# A run without models: dedup (exact and near duplicates only) and decontaminate.
NO_MODELS = ["--skip", "enhance", "--skip", "expand", "--skip", "variety", "--skip", "quality",
             "--set", "dedup.semantic=0"]


def some_records(n: int) -> list[Record]:
    return [Record(f"Task {i}: say {i} in words.", "", f"The number {i}.", id=f"r{i}") for i in range(n)]


@pytest.fixture
def full_disk(monkeypatch):
    """Writing a record fails with ENOSPC after `after` records, as on a full disk."""

    def fill(after: int) -> None:
        opened = records.jsonlines.open

        def open_(path, mode="r", **options):
            writer = opened(path, mode, **options)
            written = 0

            def write(obj):
                nonlocal written
                if written == after:
                    raise OSError(errno.ENOSPC, "No space left on device")
                written += 1
                return type(writer).write(writer, obj)

            writer.write = write
            return writer

        monkeypatch.setattr(records.jsonlines, "open", open_)

    return fill


def test_a_full_disk_keeps_the_old_file_and_leaves_nothing_partial(tmp_path, full_disk):
    out = tmp_path / "out.jsonl"
    write_records(out, some_records(2))
    before = out.read_bytes()
    full_disk(after=3)
    with pytest.raises(StorageError) as raised:
        write_records(out, some_records(10))
    assert str(raised.value) == f"{out}: {NO_SPACE}"
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_full_disk_in_a_phase_command_is_one_line(tmp_path, full_disk):
    source = tmp_path / "in.jsonl"
    write_records(source, some_records(5))
    full_disk(after=2)
    result = CliRunner().invoke(main, ["dedup", str(source), str(tmp_path / "out.jsonl"), "--semantic", "0",
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {tmp_path / 'out.jsonl'}: {NO_SPACE}" in result.output
    assert not list(tmp_path.glob("*out.jsonl*"))


def test_a_run_stopped_by_a_full_disk_resumes_once_there_is_space(tmp_path, full_disk, monkeypatch):
    source = tmp_path / "in.jsonl"
    write_records(source, some_records(6))
    run = ["run", str(source), "--out", str(tmp_path / "run"), *NO_MODELS]
    original = records.write_records
    written: list[str] = []

    def disk_full_at_the_third_file(path, items):  # dedup's output and side file fit, decontaminate's does not
        written.append(path.name)
        if len(written) == 3:
            full_disk(after=0)
        return original(path, items)

    monkeypatch.setattr("lift_local.pipeline.write_records", disk_full_at_the_third_file)
    result = CliRunner().invoke(main, run)
    assert result.exit_code == 1, result.output
    assert f"{tmp_path / 'run' / '4-decontaminate.jsonl'}: {NO_SPACE}" in result.output, result.output
    assert not list((tmp_path / "run").glob(".*.tmp"))
    monkeypatch.undo()
    again = CliRunner().invoke(main, run)
    assert again.exit_code == 0, again.output
    assert "[1/6] dedup: unchanged since" in again.output and "[4/6] decontaminate: 6 → 6 records" in again.output
    assert [r.id for r in read_records(tmp_path / "run" / "curated.jsonl")] == [f"r{i}" for i in range(6)]


def test_a_full_disk_in_a_cache_names_the_cache(tmp_path, monkeypatch):
    store = Store(tmp_path / "replies.sqlite", "replies")
    store.put_many({"a": b"1"})

    class Full:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def executemany(self, *args):
            import sqlite3

            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_db", Full())
    with pytest.raises(StorageError, match=r"replies.sqlite: database or disk is full \(free some space"):
        store.put_many({"b": b"2"})


def test_an_input_removed_while_a_run_reads_it_is_named(tmp_path, monkeypatch):
    source = tmp_path / "in.jsonl"
    write_records(source, some_records(3))
    reader = records.iter_records

    def read_then_vanish(path, fields=None):
        yield from reader(path, fields)
        source.unlink()  # the run goes on to hash the input it read

    monkeypatch.setattr("lift_local.pipeline.iter_records", read_then_vanish)
    result = CliRunner().invoke(main, ["run", str(source), "--out", str(tmp_path / "run"), *NO_MODELS])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {source}: No such file or directory (it was removed or moved while lift-local used it)" in result.output


def namespace_script(body: str) -> list[str]:
    """`body` as root of a user and mount namespace of its own, where it can mount small file systems."""
    return ["unshare", "-rm", "sh", "-ec", body]


@pytest.fixture
def own_mounts():
    if shutil.which("unshare") is None or subprocess.run(namespace_script("true")).returncode != 0:
        pytest.skip("this machine does not let a test mount file systems of its own (unshare -rm)")


def test_a_real_full_disk_stops_the_run_and_it_resumes_after_space_is_freed(tmp_path, own_mounts):
    """On a 1 MiB tmpfs nearly filled: the run stops with one line, leaves no temporary file, and the same
    command finishes once the filler is gone; its curated set equals a run's on a roomy disk."""
    source = tmp_path / "in.jsonl"
    write_records(source, some_records(300))
    disk, roomy = tmp_path / "disk", tmp_path / "roomy"
    disk.mkdir()
    cli = " ".join([*LIFT_LOCAL, "run", str(source), *NO_MODELS])
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=1m tmpfs {disk}
        head -c 900000 /dev/zero > {disk}/filler
        cd {REPO}
        if {cli} --out {disk}/run 2> {tmp_path}/first.err; then echo first=0; else echo first=$?; fi
        find {disk}/run -name '*.tmp' > {tmp_path}/partial
        rm {disk}/filler
        {cli} --out {disk}/run > {tmp_path}/second.out
        cp {disk}/run/curated.jsonl {tmp_path}/curated.jsonl
    """)
    done = subprocess.run(namespace_script(script), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "first=1" in done.stdout
    error = (tmp_path / "first.err").read_text()
    assert "No space left on device" in error and "Traceback" not in error and error.count("\n") == 1
    assert (tmp_path / "partial").read_text() == ""
    subprocess.run([*LIFT_LOCAL, "run", str(source), "--out", str(roomy), *NO_MODELS], check=True,
                   capture_output=True, cwd=REPO)
    assert (tmp_path / "curated.jsonl").read_text() == (roomy / "curated.jsonl").read_text()


def test_a_read_only_output_folder_is_one_line(tmp_path, own_mounts):
    source = tmp_path / "in.jsonl"
    write_records(source, some_records(3))
    folder = tmp_path / "ro"
    folder.mkdir()
    script = textwrap.dedent(f"""
        mount -t tmpfs -o ro tmpfs {folder}
        cd {REPO}
        if {" ".join(LIFT_LOCAL)} dedup {source} {folder}/out.jsonl --semantic 0 --cache-dir {tmp_path}/cache \\
            2> {tmp_path}/err; then echo rc=0; else echo rc=$?; fi
    """)
    done = subprocess.run(namespace_script(script), capture_output=True, text=True)
    assert "rc=1" in done.stdout, done.stderr
    error = (tmp_path / "err").read_text()
    assert error.startswith(f"Error: {folder}") and "Read-only file system" in error
    assert "Traceback" not in error and error.count("\n") == 1


def test_a_refusal_no_code_foresaw_is_still_one_line_naming_the_file(tmp_path):
    """Here --cache-dir lies inside a file: its folder cannot be made."""
    source, blocker = tmp_path / "in.jsonl", tmp_path / "not-a-folder"
    write_records(source, some_records(3))
    blocker.write_text("")
    result = CliRunner().invoke(main, ["dedup", str(source), str(tmp_path / "o.jsonl"), "--semantic", "0",
                                       "--cache-dir", str(blocker / "cache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {blocker}" in result.output and "Not a directory" in result.output
