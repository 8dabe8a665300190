"""Parquet, CSV and Hugging Face `datasets` folders in, Parquet, `datasets` and ShareGPT out; column mapping.

Real records from SHARED_DATA go through every new format and must come back the same; `datasets` itself
checks that what lift-local writes loads, and writes folders for lift-local to read.
"""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA

from lift_local import exports, pipeline
from lift_local.config import load_config
from lift_local.phases import all_phases
from lift_local.records import InputError, Record, parse_field_options, read_records
from lift_local.workbench import Workbench


@pytest.fixture(scope="module")
def real_records():
    """50 Code Alpaca records (half with an input) and 50 Dolly records (with a `category`)."""
    code, dolly = (read_records(SHARED_DATA / name)[:50] for name in ("code_alpaca_2k.json", "dolly_3k.json"))
    return code + dolly



@pytest.fixture(scope="module")
def datasets():
    """Hugging Face `datasets`, imported only by the tests that use it (it takes a second)."""
    import datasets

    return datasets

def core(records):
    return [(r.id, r.instruction, r.input, r.output) for r in records]


@pytest.mark.parametrize("fmt", ["parquet", "datasets"])
def test_tabular_exports_round_trip_real_records(tmp_path, real_records, fmt):
    name = exports.write(tmp_path, real_records, fmt)
    back = read_records(tmp_path / name)
    assert core(back) == core(real_records)
    assert sum(1 for r in back if r.input) >= 20  # the inputs really went through, not just empty strings
    assert not any("source_id" in r.extra for r in back)  # lift-local's id column is read back as the id


def test_sharegpt_export_round_trips_and_folds_the_input_into_the_user_turn(tmp_path, real_records):
    name = exports.write(tmp_path, real_records, "sharegpt")
    first = json.loads((tmp_path / name).read_text(encoding="utf-8").splitlines()[0])
    assert [turn["from"] for turn in first["conversations"]] == ["human", "gpt"]
    back = read_records(tmp_path / name)
    plain = [(old, new) for old, new in zip(real_records, back, strict=True) if not old.input]
    assert len(plain) > 50 and all(core([old]) == core([new]) for old, new in plain)
    with_input = [(old, new) for old, new in zip(real_records, back) if old.input]
    assert all(new.instruction == f"{old.instruction}\n\n{old.input}" and new.output == old.output
               for old, new in with_input)


def test_sharegpt_export_puts_a_system_prompt_first(tmp_path):
    source = tmp_path / "chat.jsonl"
    turns = [{"from": "system", "value": "Answer in French."}, {"from": "human", "value": "Hello?"},
             {"from": "gpt", "value": "Bonjour !"}]
    source.write_text(json.dumps({"conversations": turns}) + "\n", encoding="utf-8")
    exports.write(tmp_path, read_records(source), "sharegpt")
    written = json.loads((tmp_path / "curated.sharegpt.jsonl").read_text(encoding="utf-8"))
    assert written == {"conversations": turns}


def test_datasets_export_loads_with_load_from_disk(tmp_path, real_records, datasets):
    exports.write(tmp_path, real_records, "datasets")
    loaded = datasets.load_from_disk(str(tmp_path / "curated.dataset"))
    assert loaded.column_names == ["id", "instruction", "input", "output"]
    assert len(loaded) == 100
    assert [tuple(row.values()) for row in loaded] == core(real_records)


def test_reads_a_folder_datasets_wrote_with_a_column_mapping(tmp_path, real_records, datasets):
    rows = {"prompt": [r.instruction for r in real_records], "context": [r.input for r in real_records],
            "response": [r.output for r in real_records], "n": list(range(100))}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"), max_shard_size="20KB")
    assert len(list((tmp_path / "saved").glob("data-*.arrow"))) > 1
    fields = {"instruction": "prompt", "input": "context", "output": "response"}
    back = read_records(tmp_path / "saved", fields)
    assert core(back) == core(real_records)
    assert back[73].extra == {"n": 73}
    rows["prompt"][73] = " "
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "bad"), max_shard_size="20KB")
    # Rows are numbered across shards, as dataset[i] numbers them.
    with pytest.raises(InputError, match=r"bad:row 73: field 'instruction' is empty"):
        read_records(tmp_path / "bad", fields)


def test_reads_the_train_split_of_a_dataset_dict(tmp_path, real_records, datasets):
    table = {"instruction": [r.instruction for r in real_records], "output": [r.output for r in real_records]}
    whole = datasets.Dataset.from_dict(table)
    splits = datasets.DatasetDict({"test": whole.select(range(10)), "train": whole.select(range(10, 100))})
    splits.save_to_disk(str(tmp_path / "dict"))
    back = read_records(tmp_path / "dict")
    assert [r.instruction for r in back] == table["instruction"][10:]
    datasets.DatasetDict({"validation": whole.select(range(5))}).save_to_disk(str(tmp_path / "only"))
    assert len(read_records(tmp_path / "only")) == 5  # the only split, whatever its name


def test_dataset_dict_without_train_lists_its_splits(tmp_path, datasets):
    whole = datasets.Dataset.from_dict({"instruction": ["a", "b"], "output": ["c", "d"]})
    datasets.DatasetDict({"test": whole, "validation": whole}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(InputError, match=r"dict: a DatasetDict with splits test, validation and no 'train'"):
        read_records(tmp_path / "dict")


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_round_trips_real_records_with_a_mapping(tmp_path, real_records, suffix, delimiter):
    path = tmp_path / f"records{suffix}"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["question", "input", "answer"])
        writer.writerows((r.instruction, r.input, r.output) for r in real_records)
    back = read_records(path, parse_field_options(["instruction=question", "output = answer"]))
    assert core(back) == core(real_records)  # multi-line code answers survive the quoting


def test_mapping_applies_to_json_and_keeps_a_displaced_column(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"instruction": "old task", "task": "Add 2 and 3", "answer": "5"}) + "\n")
    (record,) = read_records(path, {"instruction": "task", "output": "answer"})
    assert (record.instruction, record.output) == ("Add 2 and 3", "5")
    assert record.extra == {"source_instruction": "old task"}  # nothing the user had is lost


def test_run_reads_a_datasets_folder_and_writes_every_export(tmp_path, real_records, datasets):
    columns = {"prompt": [r.instruction for r in real_records], "completion": [r.output for r in real_records]}
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "in"))
    config = load_config(skip=[cls.name for cls in all_phases()])
    fields = {"instruction": "prompt", "output": "completion"}
    manifest = pipeline.run(tmp_path / "in", tmp_path / "run", config, Workbench(tmp_path / "cache"),
                            formats=tuple(exports.FORMATS), fields=fields, echo=lambda line: None)
    assert manifest.input["fields"] == fields
    assert sorted(manifest.exports) == sorted(exports.FORMATS)
    assert [r.output for r in read_records(tmp_path / "run" / "curated.parquet")] == columns["completion"]
    (tmp_path / "in" / "data-00000-of-00001.arrow").write_bytes(b"changed")
    assert pipeline.sha256_file(tmp_path / "in") != manifest.input["sha256"]  # a changed shard is noticed


def test_folder_export_is_replaced_atomically(tmp_path, real_records):
    exports.write(tmp_path, real_records[:3], "datasets")
    exports.write(tmp_path, real_records[:5], "datasets")  # over an existing folder
    assert len(read_records(tmp_path / "curated.dataset")) == 5

    with pytest.raises(pa.ArrowTypeError):  # fails half-way: the Arrow table cannot be built
        exports.write(tmp_path, [Record("i", "", 5, "x")], "datasets")
    assert len(read_records(tmp_path / "curated.dataset")) == 5  # the previous export is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curated.dataset"]  # no temporary folder left


def test_mapping_to_a_missing_column_names_it_and_the_columns_present(tmp_path, real_records):
    exports.write(tmp_path, real_records, "parquet")
    expected = r"curated\.parquet:row 0: no column 'prompt' \(mapped to instruction\); its columns are: "
    expected += r"id, instruction, input, output$"
    with pytest.raises(InputError, match=expected):
        read_records(tmp_path / "curated.parquet", {"instruction": "prompt"})


@pytest.mark.parametrize(
    "options, expected",
    [
        (["instruction"], r"expected NAME=COLUMN \(e\.g\. instruction=prompt\), got 'instruction'"),
        (["instruction="], r"expected NAME=COLUMN .* got 'instruction='"),
        (["=prompt"], r"expected NAME=COLUMN .* got '=prompt'"),
        (["answer=response"], r"cannot map answer: the fields are instruction, input, output"),
        (["output=a", "output=b"], r"'output' is mapped twice \(output=a and output=b\)"),
        (["instruction=text", "output=text"], r"column text is mapped to more than one field"),
    ],
)
def test_bad_field_options(options, expected):
    with pytest.raises(ValueError, match=expected):
        parse_field_options(options)


def test_read_records_rejects_an_unknown_field_name(tmp_path):
    with pytest.raises(ValueError, match=r"cannot map id"):
        read_records(SHARED_DATA / "dolly_3k.json", {"id": "category"})


def test_corrupted_parquet(tmp_path, real_records):
    exports.write(tmp_path, real_records, "parquet")
    data = (tmp_path / "curated.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(InputError, match=r"cut\.parquet: not a readable Parquet file: .*"):
        read_records(tmp_path / "cut.parquet")
    with pytest.raises(InputError, match=r"gone\.parquet: no such file"):
        read_records(tmp_path / "gone.parquet")


def test_parquet_is_read_in_batches(tmp_path, monkeypatch):
    """A large file must not be read as one table: `read_table` is not used, and batches are small."""
    rows = [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(2500)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "big.parquet", row_group_size=2500)
    monkeypatch.setattr(pq, "read_table", None)
    sizes = []
    real_iter = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in real_iter(self, *args, **kwargs):
            sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    assert [r.instruction for r in read_records(tmp_path / "big.parquet")][-1] == "task 2499"
    assert len(sizes) == 3 and max(sizes) < 2500


def test_corrupted_arrow_shard_names_the_shard(tmp_path, datasets):
    datasets.Dataset.from_dict({"instruction": ["a"], "output": ["b"]}).save_to_disk(str(tmp_path / "ds"))
    shard = tmp_path / "ds" / "data-00000-of-00001.arrow"
    shard.write_bytes(b"not arrow at all")
    with pytest.raises(InputError, match=r"ds/data-00000-of-00001\.arrow: not a readable Arrow stream file"):
        read_records(tmp_path / "ds")


def test_empty_folder_is_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: is a folder but not a Hugging Face datasets folder \(no state"):
        read_records(tmp_path / "empty")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("instruction,input,output\nAdd,1 2,3\n,,4\n", r"bad\.csv:row 1 \(line 3\): field 'instruction' is empty"),
        ("instruction,input,output\nAdd,1 2,3\nSubtract\n", r"bad\.csv:row 1 \(line 3\): missing field 'output'"),
        ("input,output\n1 2,3\n", r"bad\.csv:row 0 \(line 2\): missing field 'instruction'"),
        ("instruction,output\nAdd,3,extra\n", r"bad\.csv:row 0 \(line 2\): has more cells than the header's 2"),
        ("instruction,output\n", r"bad\.csv: the file holds no records"),
        ('instruction,output\n"Add,3\n', r"bad\.csv:line \d+: malformed CSV"),
    ],
)
def test_bad_csv_names_file_row_and_field(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=expected):
        read_records(path)
