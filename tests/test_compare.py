"""`compare-judges`: every statistic checked against scipy / scikit-learn computed here, every input format,
and a clear error for every kind of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from fakes import FakeChat, last_user_message, run_phase
from matplotlib.image import imread
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from lift_local.cli import main
from lift_local.judge.agreement import NothingToCompare, ScoreTable, compare, format_report, load_scores
from lift_local.judge.protocol import DIMENSIONS, Score
from lift_local.phases.quality import Quality, QualityParams
from lift_local.records import read_records, write_records

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def code_alpaca():
    return read_records(SHARED / "code_alpaca_2k.json")


def table(totals, dimensions=None, unscored=()):
    return ScoreTable("test", "test", dict(totals), dimensions or {}, frozenset(unscored))


def judged(record, total, scores=None, status="ok", quality=None):
    """A record as lift-local's quality phase writes it."""
    judge = {"status": status, "scores": scores or {}, "total": total, "raw": "Total: ...", "retries": 0}
    meta = {"judge": judge} if quality is None else {"judge": judge, **Score(quality, 50.0).to_meta()}
    return record.with_meta(**meta)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def expected_top_overlap(ids, x, y, k):
    """Top-k by score, ties to the smaller id, computed independently of the module."""
    ids = np.array(ids)
    top_x = set(ids[np.lexsort((ids, -x))][:k])
    top_y = set(ids[np.lexsort((ids, -y))][:k])
    return len(top_x & top_y) / k


# --- known answers ---


def test_identical_scores_agree_perfectly():
    scores = {f"r{i:02}": float(s) for i, s in enumerate(np.linspace(3, 97, 40))}
    result = compare(table(scores), table(scores), top=10, bins=10).overall
    assert (result.pearson, result.spearman, result.kendall) == pytest.approx((1, 1, 1))
    assert result.kappa == pytest.approx(1)
    assert result.mad == 0
    assert result.top_overlap == 1
    assert result.notes == ()


def test_reversed_scores_disagree_completely():
    ids = [f"r{i}" for i in range(10)]
    a = {i: 5 + 10 * n for n, i in enumerate(ids)}  # one record in each of the 10 bins
    b = {i: 95 - 10 * n for n, i in enumerate(ids)}
    result = compare(table(a), table(b), top=5, bins=10).overall
    assert (result.pearson, result.spearman, result.kendall) == pytest.approx((-1, -1, -1))
    assert result.kappa == pytest.approx(-1)
    assert result.top_overlap == 0
    assert result.mad == pytest.approx(np.mean([abs(a[i] - b[i]) for i in ids]))


@pytest.mark.parametrize("bins", [10, 4])
@pytest.mark.parametrize("top", [50, 0.3])
def test_statistics_match_scipy_and_sklearn(bins, top):
    rng = np.random.default_rng(7)
    ids = [f"id{n:04}" for n in range(300)]
    x = rng.integers(20, 95, size=300).astype(float)
    y = np.clip(x + rng.normal(0, 12, size=300).round(), 0, 100)
    result = compare(table(zip(ids, x)), table(zip(ids, y)), top=top, bins=bins).overall

    assert result.pearson == pytest.approx(stats.pearsonr(x, y)[0])
    assert result.spearman == pytest.approx(stats.spearmanr(x, y)[0])
    assert result.kendall == pytest.approx(stats.kendalltau(x, y)[0])
    assert result.mad == pytest.approx(np.mean(np.abs(x - y)))
    bin_x, bin_y = (np.minimum(np.floor(s / (100 / bins)), bins - 1) for s in (x, y))
    kappa = cohen_kappa_score(bin_x, bin_y, weights="quadratic", labels=np.arange(bins))
    assert result.kappa == pytest.approx(kappa)
    k = 50 if top == 50 else 90
    assert result.top_k == k
    assert result.top_overlap == pytest.approx(expected_top_overlap(ids, x, y, k))
    assert result.chance_overlap == pytest.approx(k / 300)
    assert 0.5 < result.pearson < 1  # the data really is noisy: the checks above are not trivially 1


def test_kappa_uses_the_true_distance_between_bins():
    # Only bins 0, 1 and 9 occur: without the full label list, 1 and 9 would count as neighbours.
    ids = [f"r{i}" for i in range(6)]
    x = np.array([5, 15, 95, 5, 15, 95.0])
    y = np.array([5, 95, 15, 15, 5, 95.0])
    result = compare(table(zip(ids, x)), table(zip(ids, y)), top=2, bins=10).overall
    bins_x, bins_y = x // 10, y // 10
    expected = cohen_kappa_score(bins_x, bins_y, weights="quadratic", labels=range(10))
    assert result.kappa == pytest.approx(expected)
    assert result.kappa != pytest.approx(cohen_kappa_score(bins_x, bins_y, weights="quadratic"))


@pytest.mark.filterwarnings("error")  # undefined statistics must not reach scipy / sklearn and warn
def test_constant_judge_is_reported_not_nan():
    ids = [f"r{i}" for i in range(20)]
    constant = {i: 85.0 for i in ids}
    varied = {i: float(n * 5) for n, i in enumerate(ids)}
    result = compare(table(constant), table(varied), top=5, bins=10).overall
    assert (result.pearson, result.spearman, result.kendall) == (None, None, None)
    assert "A gave every record the same score" in " ".join(result.notes)
    varied_bins = np.array(list(varied.values())) // 10
    expected = cohen_kappa_score([8] * 20, varied_bins, weights="quadratic", labels=range(10))
    assert result.kappa == pytest.approx(expected)
    both = compare(table(constant), table(constant), top=5, bins=10)
    assert both.overall.kappa is None and both.overall.pearson is None
    assert any("same bin" in note for note in both.overall.notes)
    assert "A and B gave every record" in " ".join(both.overall.notes)
    report = format_report(table(constant), table(constant), both)
    assert "n/a" in report and "nan" not in report


@pytest.mark.parametrize("top", [5, 1.0])
def test_top_k_covering_every_record_is_not_reported_as_agreement(top):
    scores = {"a": 10.0, "b": 20.0, "c": 30.0}
    result = compare(table(scores), table({"a": 30.0, "b": 20.0, "c": 10.0}), top=top, bins=10).overall
    assert result.top_overlap is None
    assert any("selects all 3" in note for note in result.notes)


def test_ties_at_the_cut_are_broken_by_id_and_noted():
    a = {"a": 90.0, "b": 50.0, "c": 50.0, "d": 50.0, "e": 10.0}
    b = {"a": 90.0, "b": 10.0, "c": 20.0, "d": 80.0, "e": 30.0}
    result = compare(table(a), table(b), top=2, bins=10).overall
    assert result.top_overlap == 0.5  # A keeps a and b (b < c < d), B keeps a and d
    assert result.notes == ("top-2: 3 records tie at A's cut score 50; broken by id",)


def test_matched_only_and_unscored_counts():
    a = table({"x": 10.0, "y": 20.0, "z": 30.0, "only-a": 40.0, "unscored-in-b": 50.0}, unscored={"u"})
    b = table({"x": 15.0, "y": 25.0, "z": 20.0, "only-b": 60.0}, unscored={"unscored-in-b", "v", "w"})
    result = compare(a, b, top=1, bins=10)
    counts = (result.matched, result.only_a, result.only_b, result.unscored_a, result.unscored_b)
    assert counts == (3, 1, 1, 1, 3)
    assert result.overall.n == 3


def test_no_common_record_is_a_clear_error():
    with pytest.raises(NothingToCompare, match="no scored record in common.*'a1'.*'b1'"):
        compare(table({"a1": 1.0}), table({"b1": 1.0}), top=1, bins=10)


@pytest.mark.parametrize("top", [0, -3, 1.5, 0.0, True, "5"])
def test_invalid_top_is_rejected(top):
    with pytest.raises(ValueError, match="top"):
        compare(table({"a": 1.0}), table({"a": 1.0}), top=top, bins=10)


def test_invalid_bins_is_rejected():
    with pytest.raises(ValueError, match="bins"):
        compare(table({"a": 1.0}), table({"a": 1.0}), top=1, bins=1)


# --- input formats ---


@pytest.fixture
def five(code_alpaca):
    """Five real records and the scores that every format below encodes (index 3 has no score)."""
    return code_alpaca[:5], {0: 72, 1: 55.5, 2: 90, 4: 0}


def encode(fmt, tmp_path, records, scores):
    ids = [r.id for r in records]
    if fmt == "lift-local":
        statuses = ["ok" if i in scores else "invalid_json" for i in range(5)]
        out = [judged(record, scores.get(i), status=statuses[i]) for i, record in enumerate(records)]
        write_records(tmp_path / "s.jsonl", out)
        return tmp_path / "s.jsonl"
    items = [{"id": ids[i], "score": scores.get(i), "model": "gpt-4"} for i in range(5)]
    if fmt == "jsonl":
        return write(tmp_path / "s.jsonl", "".join(json.dumps(item) + "\n" for item in items))
    if fmt == "json":
        return write(tmp_path / "s.json", json.dumps(items, indent=2))
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        rows = [f"id{sep}score{sep}notes"] + [f"{ids[i]}{sep}{scores.get(i, '')}{sep}x" for i in range(5)]
        return write(tmp_path / f"s.{fmt}", "\n".join(rows) + "\n")
    assert fmt == "index"  # the reference scripts' gpt_scores.txt
    return write(tmp_path / "gpt_scores.txt", "".join(f"{i}\t{s}\n" for i, s in scores.items()))


@pytest.mark.parametrize("fmt", ["lift-local", "jsonl", "json", "csv", "tsv", "index"])
def test_every_format_gives_the_same_scores(fmt, five, tmp_path):
    records, scores = five
    loaded = load_scores(encode(fmt, tmp_path, records, scores), records)
    assert loaded.totals == {records[i].id: float(s) for i, s in scores.items()}
    if fmt != "index":  # an index file simply has no line for a record without a score
        assert loaded.unscored == {records[3].id}


def test_lift_local_dimensions_are_put_on_0_to_100(five, tmp_path):
    records, _ = five
    scores = {"clarity": 15, "difficulty": 5, "explanation": 0, "accuracy": 7}
    write_records(tmp_path / "q.jsonl", [judged(records[0], 27, scores)])
    loaded = load_scores(tmp_path / "q.jsonl")
    assert loaded.dimensions == {
        "clarity": {records[0].id: 100.0},
        "difficulty": {records[0].id: 20.0},
        "explanation": {records[0].id: 0.0},
        "accuracy": {records[0].id: 20.0},
    }
    assert "lift-local judge total" in loaded.description


def test_field_quality_compares_the_final_score(five, tmp_path):
    records, _ = five
    scored = [judged(records[0], 80, quality=81.5), judged(records[1], 60, quality=55)]
    write_records(tmp_path / "q.jsonl", scored)
    loaded = load_scores(tmp_path / "q.jsonl", field="quality")
    assert loaded.totals == {records[0].id: 81.5, records[1].id: 55.0}


def test_scale_is_auto_detected_or_given(tmp_path):
    path = write(tmp_path / "s.csv", "id,score\na,7\nb,10\nc,2.5\n")
    auto = load_scores(path)
    assert auto.totals == {"a": 70.0, "b": 100.0, "c": 25.0}
    assert "0-10 (auto-detected)" in auto.description
    assert load_scores(path, scale=100).totals == {"a": 7.0, "b": 10.0, "c": 2.5}
    assert load_scores(write(tmp_path / "h.csv", "id,score\na,70\nb,11\n")).totals == {"a": 70.0, "b": 11.0}


def test_dimension_columns_are_compared_when_both_sides_have_them(code_alpaca, tmp_path):
    rng = np.random.default_rng(3)
    records = code_alpaca[:200]
    ours, rows = [], ["id,score,Clarity,accuracy,difficulty_comment"]
    for record in records:
        dims = {name: int(rng.integers(0, top + 1)) for name, top in DIMENSIONS.items()}
        ours.append(judged(record, sum(dims.values()), dims))
        clarity = min(15, dims["clarity"] + int(rng.integers(0, 3)))
        rows.append(f"{record.id},{int(rng.integers(0, 101))},{clarity},{35 - dims['accuracy']},hard")
    write_records(tmp_path / "ours.jsonl", ours)
    write(tmp_path / "gpt4.csv", "\n".join(rows))
    a, b = load_scores(tmp_path / "ours.jsonl"), load_scores(tmp_path / "gpt4.csv")
    result = compare(a, b, top=0.25, bins=10)

    assert list(result.dimensions) == ["clarity", "accuracy"]  # difficulty_comment is not a dimension
    clarity_a = np.array([r.meta["judge"]["scores"]["clarity"] for r in sorted(ours, key=lambda r: r.id)])
    clarity_b = np.array([int(row.split(",")[2]) for row in sorted(rows[1:])])
    clarity = result.dimensions["clarity"]
    assert clarity.mad == pytest.approx(np.mean(np.abs(clarity_a - clarity_b)) / 15 * 100)
    assert clarity.spearman == pytest.approx(stats.spearmanr(clarity_a, clarity_b)[0])
    assert result.dimensions["accuracy"].spearman == pytest.approx(-1)
    assert result.dimensions["accuracy"].top_k == 50


def test_reads_what_the_quality_phase_writes(code_alpaca, tmp_path):
    """The real quality phase (with a fake judge) writes its scores; a second judge with the same per-record
    dimensions, written as the reference scripts would, must then agree perfectly."""
    records = code_alpaca[:60]
    by_instruction = {}
    for n, record in enumerate(records):  # per-record scores, and no valid reply at all for every 10th record
        by_instruction[record.instruction] = None if n % 10 == 3 else {
            name: (n * 7 + len(name)) % (top + 1) for name, top in DIMENSIONS.items()
        }

    def respond(conversation):
        user = last_user_message(conversation)
        scores = next(v for instruction, v in by_instruction.items() if instruction in user)
        return json.dumps(scores) if scores else "I cannot score this."

    outcome = run_phase(Quality(QualityParams(expected=False, top=20, retries=1)), records, judge=FakeChat(respond))
    write_records(tmp_path / "scores.jsonl", outcome.side["scores"])
    write_records(tmp_path / "records.jsonl", records)
    totals = [sum(v.values()) if v else None for v in by_instruction.values()]
    write(tmp_path / "gpt_scores.txt", "".join(f"{i}\t{t}\n" for i, t in enumerate(totals) if t is not None))

    ours = load_scores(tmp_path / "scores.jsonl")
    assert len(ours.unscored) == 6 and len(ours.totals) == 54
    reference = load_scores(tmp_path / "gpt_scores.txt", read_records(tmp_path / "records.jsonl"))
    comparison = compare(ours, reference, top=20, bins=10)
    assert (comparison.matched, comparison.only_a, comparison.only_b, comparison.unscored_a) == (54, 0, 0, 6)
    assert comparison.overall.mad == 0 and comparison.overall.top_overlap == 1
    assert comparison.overall.spearman == pytest.approx(1)
    assert list(comparison.dimensions) == []  # the reference scripts keep totals only

    final = load_scores(tmp_path / "scores.jsonl", field="quality")
    assert final.totals == pytest.approx({r.id: r.meta["quality"] for r in outcome.side["scores"] if "quality" in r.meta})


# --- the command ---


def run(*args):
    return CliRunner().invoke(main, ["compare-judges", *map(str, args)])


def test_command_on_real_records_prints_the_table_and_writes_the_figure(code_alpaca, tmp_path):
    rng = np.random.default_rng(11)
    records = code_alpaca[:400]
    write_records(tmp_path / "variety.jsonl", records)
    ours, lines = [], []
    for index, record in enumerate(records):
        dims = {name: int(rng.integers(top // 3, top + 1)) for name, top in DIMENSIONS.items()}
        total = sum(dims.values())
        ours.append(judged(record, total, dims, status="invalid_json" if index % 40 == 0 else "ok"))
        if index < 380:
            lines.append(f"{index}\t{int(np.clip(total + rng.normal(0, 8), 0, 100))}\n")
    write_records(tmp_path / "judged.jsonl", ours)
    write(tmp_path / "gpt_scores.txt", "".join(lines))

    figure = tmp_path / "plots" / "agreement.png"
    result = run(tmp_path / "judged.jsonl", tmp_path / "gpt_scores.txt",
                 "--records", tmp_path / "variety.jsonl", "--top", "100", "--figure", figure)
    assert result.exit_code == 0, result.output

    a = load_scores(tmp_path / "judged.jsonl")
    b = load_scores(tmp_path / "gpt_scores.txt", records)
    expected = compare(a, b, top=100, bins=10)
    assert format_report(a, b, expected) in result.output
    assert "records: 370 matched, 20 only in A, 0 only in B, unscored 10 in A and 0 in B" in result.output
    total_row = next(line for line in result.output.splitlines() if line.startswith("total"))
    overall = expected.overall
    assert total_row.split()[1:4] == ["370", f"{overall.mean_a:.1f}", f"{overall.mean_b:.1f}"]
    assert 0.5 < expected.overall.pearson < 1
    image = imread(figure)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert list(figure.parent.iterdir()) == [figure]  # written atomically: no temporary file left


def test_command_reads_two_external_files(tmp_path):
    write(tmp_path / "a.tsv", "id\tscore\nx\t8\ny\t6\nz\t9\nw\t\n")
    b = [{"id": "x", "score": 80}, {"id": "y", "score": 50}, {"id": "z", "score": 95}]
    write(tmp_path / "b.json", json.dumps(b))
    result = run(tmp_path / "a.tsv", tmp_path / "b.json", "--top", "1")
    assert result.exit_code == 0, result.output
    assert "TSV, scores on 0-10 (auto-detected)" in result.output
    assert "unscored 1 in A and 0 in B" in result.output
    assert "    1   1.00    0.33" in result.output  # k, overlap, chance

    default = run(tmp_path / "a.tsv", tmp_path / "b.json")  # the top half: round(0.5 * 3) = 2 records
    assert "      2   1.00    0.67" in default.output


BAD_INPUTS = [
    # (file name, content, problem expected after "<file>:")
    ("s.csv", "id,score\na,80\nb,abc\n", "line 3: score must be a number, got 'abc'"),
    ("s.csv", "id,score\na,80\nb,nan\n", "line 3: score must be a finite number"),
    ("s.csv", "id,score\na,80\nb,120\n", "line 3: score 120 is outside its scale 0-100"),
    ("s.csv", "id,score\na,80\nb,-5\n", "line 3: score -5 is outside its scale 0-100"),
    ("s.csv", "id,score\na,80\na,70\n", "line 3: id 'a' appears twice (also at line 2)"),
    ("s.csv", "id,score\na,80\nb\n", "line 3: has fewer cells than the header"),
    ("s.csv", "id,score\na,80,9\n", "line 2: has more cells than the header"),
    ("s.csv", "id,score,clarity\na,80,20\n", "line 2: clarity 20 is outside its scale 0-15"),
    ("s.csv", "id,points\na,80\n", "line 1: not a score file: expected lift-local JSONL"),
    ("s.txt", "just some text\n", "line 1: not a score file"),
    ("s.jsonl", '{"id": "a", "score": 80}\n{"id": "b", "score": "high"}\n', "line 2: score must be a number"),
    ("s.jsonl", '{"id": "b", "score": true}\n', "line 1: score must be a number, got a boolean"),
    ("s.jsonl", '{"id": "a", "score": 80}\n{"id": "b", "score": 80\n', "line 2 column 24: malformed JSON"),
    ("s.jsonl", '{"id": "a", "score": 80}\n{"id": "b", "rating": 80}\n', "line 2: has no 'score' field"),
    ("s.jsonl", '{"score": 80}\n', "line 1: needs a non-empty 'id'"),
    ("s.jsonl", '{"id": "a", "score": null}\n{"id": "b", "score": ""}\n', "no record has a score (2 without"),
    ("s.json", '[{"id": "a", "score": 80}, 7]', "record 1: expected a JSON object"),
    ("s.txt", "0\t80\n1\tgood\n", "line 2: score must be a number, got 'good'"),
    ("s.txt", "0\t80\n9\t70\n", "line 2: index 9 is past the end of the 3 records"),
    ("s.txt", "0\t80\n1\t70\t5\n", "line 2: expected index<TAB>score"),
    ("s.txt", "0\t80\n0\t70\n", "appears twice (also at line 1)"),
    ("s.csv", "", "the file is empty"),
]


@pytest.mark.parametrize("name, content, problem", BAD_INPUTS)
def test_bad_input_is_a_clear_error(name, content, problem, five, tmp_path):
    records, scores = five
    write_records(tmp_path / "records.jsonl", records[:3])
    good = encode("csv", tmp_path, records, scores)
    bad = write(tmp_path / f"bad-{name}", content)
    for a, b in ((bad, good), (good, bad)):
        result = run(a, b, "--records", tmp_path / "records.jsonl")
        assert result.exit_code == 1
        assert f"Error: {bad}:" in result.output and problem in result.output, result.output
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)


def test_command_errors_name_the_file(five, tmp_path):
    records, scores = five
    ours = encode("lift-local", tmp_path, records, scores)
    index = write(tmp_path / "gpt_scores.txt", "0\t80\n1\t50\n")
    cases = [
        ((ours, tmp_path / "missing.csv"), f"{tmp_path / 'missing.csv'}: no such file"),
        ((ours, index), f"{index}: holds index<TAB>score lines: give the records they index (--records)"),
        ((ours, ours, "--scale-a", "10"), f"{ours}: holds lift-local's scores, always 0-100"),
        ((ours, ours, "--field", "quality"),
         f"{ours}:line 1: the judge's status is ok but it has no quality"),
        ((ours, write(tmp_path / "other.csv", "id,score\nzz,5\n")), "no scored record in common"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert message in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("option, message", [
    (["--top", "0"], "Invalid value for '--top': must be a count of at least 1 or a fraction in (0, 1], got 0"),
    (["--top", "1.5"], "Invalid value for '--top': must be a count of at least 1 or a fraction in (0, 1], got 1.5"),
    (["--top", "ten"], "Invalid value for '--top'"),
    (["--bins", "1"], "Invalid value for '--bins'"),
    (["--scale-b", "0"], "Invalid value for '--scale-b'"),
    (["--field", "length"], "Invalid value for '--field'"),
])
def test_bad_options_are_usage_errors(option, message, five, tmp_path):
    records, scores = five
    path = encode("csv", tmp_path, records, scores)
    result = run(path, path, *option)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_scores_match_a_reference_keyed_by_the_users_own_ids(tmp_path, cli_models):
    """`quality --scores` on records with ids of their own, against GPT-4's scores keyed by those ids."""
    rows = [json.loads(line) for line in (SHARED_DATA / "mt_bench_gpt4.jsonl").read_text().splitlines()][:30]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "gpt4.jsonl").write_text("".join(json.dumps({"id": r["id"], "score": r["gpt4_score"]}) + "\n" for r in rows))
    cli_models["judge"] = FakeChat(lambda c: json.dumps({"clarity": 9, "difficulty": 9, "explanation": 9, "accuracy": len(c[-1]["content"]) % 36}))
    args = ["quality", str(tmp_path / "answers.jsonl"), str(tmp_path / "kept.jsonl"), "--top", "5", "--no-expected",
            "--scores", str(tmp_path / "ours.jsonl"), "--cache-dir", str(tmp_path / "cache")]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, ["compare-judges", str(tmp_path / "ours.jsonl"), str(tmp_path / "gpt4.jsonl")])
    assert result.exit_code == 0, result.output
    assert "records: 30 matched, 0 only in A, 0 only in B" in result.output


def test_correlation_intervals_agree_with_a_direct_bootstrap():
    """Each correlation's 95% interval against 4,000 resamples drawn here, percentiles taken by hand."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=150)
    y = 0.5 * x + rng.normal(size=150)
    a = ScoreTable("a", "a", {str(i): 50 + 10 * v for i, v in enumerate(x)}, {}, frozenset())
    b = ScoreTable("b", "b", {str(i): 50 + 10 * v for i, v in enumerate(y)}, {}, frozenset())
    agreement = compare(a, b, top=0.5, bins=10).overall
    ids = sorted(a.totals)
    xs, ys = np.array([a.totals[i] for i in ids]), np.array([b.totals[i] for i in ids])
    draws = [rng.integers(0, len(ids), len(ids)) for _ in range(4000)]
    for name, statistic in {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}.items():
        values = [statistic(xs[d], ys[d]).statistic for d in draws]
        low, high = agreement.intervals[name]
        assert low == pytest.approx(np.percentile(values, 2.5), abs=0.03)
        assert high == pytest.approx(np.percentile(values, 97.5), abs=0.03)
        assert low < getattr(agreement, name) < high


def test_the_table_prints_every_correlation_with_its_interval(tmp_path):
    path = write(tmp_path / "s.csv", "id,score\n" + "".join(f"r{i},{i % 11}\n" for i in range(30)))
    result = run(str(path), str(path))
    assert result.exit_code == 0
    total = next(line for line in result.output.splitlines() if line.startswith("total"))
    assert total.count("1.00 [1.00, 1.00]") == 3  # a file against itself: pearson, spearman, kendall


def test_kendall_is_scipys_tau_b_exactly_over_resamples():
    """lift-local's Kendall (scipy's computation without its p-value) equals `scipy.stats.kendalltau`, ties,
    a constant side and single records included, over each row of a batch of resamples."""
    from lift_local.judge.agreement import CORRELATIONS

    kendall = CORRELATIONS["kendall"]
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 120):
        x = rng.integers(0, 5, size=(6, n)).astype(float)
        y = x + rng.integers(-2, 3, size=(6, n)) * rng.random((6, n))
        x[0] = 3.0
        expected = np.array([stats.kendalltau(a, b).statistic for a, b in zip(x, y)])
        assert np.array_equal(kendall(x, y), expected, equal_nan=True)
        assert np.array_equal(kendall(x.T, y.T, axis=0), expected, equal_nan=True)
        assert kendall(x[1], y[1]) == expected[1]
