"""The caches a cluster's replicas share: each writes a shard of its own and reads the main file; the driver
folds the shards in; a Workbench opening a cache folds in what an interrupted cluster run left."""

import threading

from lift_local.store import ShardedStore, Store
from lift_local.workbench import Workbench


def test_replicas_write_shards_and_read_the_main_file_that_absorb_fills(tmp_path):
    main = Store(tmp_path / "replies.sqlite", "replies")
    main.put_many({"old": b"1"})
    main.absorb()  # checkpointed: replicas read the file alone
    replicas = [ShardedStore(tmp_path / "replies.sqlite", "replies") for _ in range(2)]
    threads = [threading.Thread(target=replica.put_many, args=({f"new{i}": b"2"},)) for i, replica in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replicas[0].get_many(["old", "new0", "new1"]) == {"old": b"1", "new0": b"2"}  # not the other's shard
    assert len(list((tmp_path / "shards").glob("replies-*.sqlite"))) == 2
    for replica in replicas:
        replica.close()

    main.absorb()
    assert main.get_many(["old", "new0", "new1"]) == {"old": b"1", "new0": b"2", "new1": b"2"}
    assert list((tmp_path / "shards").iterdir()) == []


def test_a_replica_starts_before_the_main_file_exists(tmp_path):
    replica = ShardedStore(tmp_path / "replies.sqlite", "replies")
    replica.put_many({"a": b"1"})
    assert replica.get_many(["a", "b"]) == {"a": b"1"}


def test_a_workbench_folds_in_the_shards_an_interrupted_cluster_run_left(tmp_path):
    replica = ShardedStore(tmp_path / "cache" / "replies.sqlite", "replies")
    replica.put_many({"done": b"reply"})
    with Workbench(tmp_path / "cache") as bench:
        assert bench._store("replies").get_many(["done"]) == {"done": b"reply"}
    assert list((tmp_path / "cache" / "shards").glob("*.sqlite")) == []
