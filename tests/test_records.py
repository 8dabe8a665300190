"""Reading every supported format, and one clear error for every kind of bad input."""

import json
from pathlib import Path

import pytest

from lift_local.records import (
    InputError,
    Record,
    content_id,
    embedding_text,
    iter_records,
    read_records,
    write_records,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reads_real_alpaca_array_with_extra_fields_kept():
    records = read_records(SHARED / "dolly_3k.json")
    assert len(records) == 2996
    first = records[0]
    assert first.instruction == "How do I start running?"
    assert first.input == ""
    assert first.output.startswith("Make sure you get comfortable running shoes")
    assert first.extra == {"category": "general_qa"}  # unknown field kept, not dropped
    assert first.meta == {"origin": "original", "source": {"file": "dolly_3k.json", "index": 0}}


def test_ids_are_stable_content_hashes_and_unique():
    records = read_records(SHARED / "code_alpaca_2k.json")
    again = read_records(SHARED / "code_alpaca_2k.json")
    assert [r.id for r in records] == [r.id for r in again]
    assert len({r.id for r in records}) == len(records)
    r = records[0]
    assert r.id == content_id(r.instruction, r.input, r.output)


def test_exact_duplicates_get_distinct_ids(tmp_path):
    item = {"instruction": "Say hi", "output": "hi"}
    records = read_records(write(tmp_path, "d.json", json.dumps([item, item, item])))
    base = content_id("Say hi", "", "hi")
    assert [r.id for r in records] == [base, f"{base}-1", f"{base}-2"]


def test_jsonl(tmp_path):
    lines = [{"instruction": "a", "input": "x", "output": "b", "id": 7}, {"instruction": "c", "output": "d"}]
    path = write(tmp_path, "r.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = read_records(path)
    assert [(r.instruction, r.input, r.output) for r in records] == [("a", "x", "b"), ("c", "", "d")]
    assert [r.id for r in records] == ["7", content_id("c", "", "d")]  # the source's own id, else from content
    assert records[0].extra == {}


def test_jsonl_streams_a_record_at_a_time_with_duplicates_numbered_as_read(tmp_path):
    line = json.dumps({"instruction": "Add 1 and 2.", "output": "3"})
    path = write(tmp_path, "d.jsonl", f"{line}\n{line}\n{{broken\n")
    records = iter_records(path)
    first, second = next(records), next(records)  # before the reader has reached the broken line
    assert second.id == f"{first.id}-1"
    with pytest.raises(InputError, match="line 3"):
        next(records)
    with pytest.raises(InputError, match="line 3"):
        read_records(path)


def test_user_ids_are_kept_and_must_be_unique(tmp_path):
    lines = [{"instruction": "a", "output": "b", "id": "q-1"}, {"instruction": "c", "output": "d", "id": "q-1"}]
    path = write(tmp_path, "r.jsonl", "\n".join(json.dumps(x) for x in lines))
    with pytest.raises(InputError, match=r"r.jsonl:line 2: id 'q-1' again \(first at line 1\); ids must be unique"):
        read_records(path)
    path = write(tmp_path, "bad.jsonl", json.dumps({"instruction": "a", "output": "b", "id": [1]}))
    with pytest.raises(InputError, match=r"bad.jsonl:line 1: field 'id' must be a string or an integer, got an array"):
        read_records(path)


def test_sharegpt(tmp_path):
    item = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4"},
            {"from": "human", "value": "And 3+3?"},
            {"from": "gpt", "value": "6"},
        ],
        "source": "demo",
    }
    (record,) = read_records(write(tmp_path, "s.json", json.dumps([item])))
    assert (record.instruction, record.input, record.output) == ("What is 2+2?", "", "4")
    assert record.extra["system"] == "Be brief."
    assert record.extra["source"] == "demo"
    assert record.extra["conversations_after_first_exchange"] == item["conversations"][3:]


def test_openai_messages_jsonl(tmp_path):
    item = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}
    (record,) = read_records(write(tmp_path, "m.jsonl", json.dumps(item) + "\n"))
    assert (record.instruction, record.output) == ("Name a colour.", "Blue.")
    assert record.extra == {}


def test_round_trip_keeps_ids_meta_and_extra(tmp_path):
    records = read_records(SHARED / "dolly_3k.json")[:50]
    records[3] = records[3].with_meta(row_variance=1.5)
    out = tmp_path / "out.jsonl"
    assert write_records(out, records) == 50
    assert read_records(out) == records


def test_write_is_atomic_on_failure(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("previous complete output\n")

    def records_then_crash():
        yield Record("i", "", "o", "id1")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_records(out, records_then_crash())
    assert out.read_text() == "previous complete output\n"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_empty_output_is_read_for_enhancement_to_fill(tmp_path):
    (record,) = read_records(write(tmp_path, "e.json", '[{"instruction": "Explain x", "output": ""}]'))
    assert record.output == ""


def test_embedding_text_follows_lift():
    assert embedding_text(Record("Sum", "1 2", "3", "x")) == "<INST> Sum Input: 1 2 </INST> 3"
    assert embedding_text(Record("Hi", "", "Hello", "x")) == "<INST> Hi </INST> Hello"


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("bad.json", '[{"instruction": "a", "output": "b"},\n {"instruction": ]', r"bad\.json:line 2 column 18: malformed JSON"),
        ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", \n', r"bad\.jsonl:line 2 column \d+: malformed JSON"),
        ("list.jsonl", '{"instruction": "a", "output": "b"}\n[1, 2]\n', r"list\.jsonl:line 2: expected a JSON object, got an array"),
        ("noinst.json", '[{"instruction": "a", "output": "b"}, {"output": "b"}]', r"noinst\.json:record 1: missing field 'instruction'"),
        ("noout.jsonl", '{"instruction": "a"}\n', r"noout\.jsonl:line 1: missing field 'output'"),
        ("empty-inst.json", '[{"instruction": " ", "output": "b"}]', r"record 0: field 'instruction' is empty"),
        ("num.json", '[{"instruction": "a", "input": 3, "output": "b"}]', r"num\.json:record 0: field 'input' must be a string, got a number"),
        ("empty.json", "", r"empty\.json: the file is empty"),
        ("blank.jsonl", "\n  \n", r"blank\.jsonl: the file is empty"),
        ("emptyarr.json", "[]", r"emptyarr\.json: the file holds no records"),
        ("obj.json", '[{"instruction": "a", "output": "b"}, 5]', r"record 1: expected a JSON object, got a number"),
        ("turns.json", '[{"messages": [{"role": "user", "content": "hi"}]}]', r"record 0: 'messages' has no assistant turn"),
        ("turn.json", '[{"conversations": [{"from": "human", "value": 3}]}]', r"record 0, conversations\[0\]: field 'value' must be a string"),
    ],
)
def test_bad_input_names_file_place_and_problem(tmp_path, name, content, expected):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError, match=expected):
        read_records(path)


def test_non_utf8(tmp_path):
    path = write(tmp_path, "latin.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n', "wb")
    with pytest.raises(InputError, match=r"latin\.jsonl:line 2: not UTF-8 text \(byte 0xe9"):
        read_records(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: no such file"):
        read_records(tmp_path / "nope.json")


def test_written_files_get_ordinary_permissions(tmp_path):
    out = tmp_path / "out.jsonl"
    write_records(out, [Record("i", "", "o", "id1")])
    assert out.stat().st_mode & 0o777 == 0o666 & ~_current_umask()


def _current_umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
