"""`lift-local run`: all phases, resume after an interruption, re-runs from the right phase, config errors.

The rewriter and judge are fakes (`FakeChat`) so that what each run asks of them can be counted; the
embedding model is the real one. `test_run_vllm.py` runs the same command on the real engine.
"""

import contextlib
import hashlib
import json

import pytest
import yaml
from click.testing import CliRunner
from conftest import SHARED_DATA
from fakes import FakeChat, FakeChatInterrupted, json_reply, last_user_message

from lift_local.cli import main
from lift_local.config import ClusterConfig, load_config
from lift_local.errors import ClusterError, ConfigError
from lift_local.phases import Local
from lift_local.prompts import load_prompt
from lift_local.records import read_records

REWRITE_SYSTEM = load_prompt("expand_code").system


def rewriter_reply(conversation):
    text = last_user_message(conversation)
    if conversation[0]["content"] == REWRITE_SYSTEM:
        return f"Harder task {hashlib.sha256(text.encode()).hexdigest()[:8]}: solve it in O(n) without recursion."
    return f"A careful answer, {len(text)} characters after reading: {text[:60]}"


def judge_reply(conversation):
    """Scores that differ from record to record, derived from the text (deterministic)."""
    h = int(hashlib.sha256(last_user_message(conversation).encode()).hexdigest(), 16)
    return json_reply(clarity=h % 16, difficulty=h % 26, explanation=(h // 7) % 26, accuracy=(h // 11) % 36)


@pytest.fixture
def sample(real_sample):
    return real_sample("code_alpaca_2k.json", list(range(200, 216)))  # 16 real Code Alpaca records


@pytest.fixture
def run(tmp_path, cli_models, fake_embedder):
    """Runs `lift-local run` on `sample` into tmp_path/run with fresh fakes; returns (result, fakes)."""

    def invoke(sample, *args, judge=None):
        cli_models["rewriter"] = FakeChat(rewriter_reply, name="fake-rewriter")
        cli_models["judge"] = judge or FakeChat(judge_reply, name="fake-judge")
        argv = ["run", str(sample), "--out", str(tmp_path / "run"), "--set", "expand.task='code'",
                "--set", "expand.rounds=1", "--set", "variety.keep=0.5", "--set", "quality.top=6",
                "--set", "quality.expected=false", *args]
        result = CliRunner().invoke(main, argv)
        return result, cli_models["rewriter"], cli_models["judge"]

    return invoke


def manifest(tmp_path):
    return json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_full_run_writes_every_phase_manifest_report_and_exports(tmp_path, sample, run):
    result, rewriter, judge = run(sample, "--format", "alpaca", "--format", "messages")
    assert result.exit_code == 0, result.output
    phases = manifest(tmp_path)["phases"]
    assert [(name, p["records_in"], p["records_out"]) for name, p in phases.items()] == [
        ("dedup", 16, 16), ("enhance", 16, 16), ("expand", 16, 32), ("decontaminate", 32, 32), ("variety", 32, 16),
        ("quality", 16, 6),
    ]
    assert all(p["seconds"] >= 0 and len(p["fingerprint"]) == 64 for p in phases.values())
    assert phases["variety"]["stats"]["n_components"] >= 1
    run_dir = tmp_path / "run"
    curated = read_records(run_dir / "curated.jsonl")
    assert len(curated) == 6 and all("quality" in r.meta for r in curated)
    assert len(read_records(run_dir / phases["quality"]["side"]["baseline"])) == 6
    assert len(read_records(run_dir / phases["variety"]["side"]["dropped"])) == 16
    alpaca = json.loads((run_dir / "curated.alpaca.json").read_text())
    assert [row["output"] for row in alpaca] == [r.output for r in curated]
    messages = [json.loads(line) for line in (run_dir / "curated.messages.jsonl").read_text().splitlines()]
    assert messages[0]["messages"][1] == {"role": "assistant", "content": curated[0].output}
    assert (run_dir / "report.html").is_file()
    assert f"Curated data: {run_dir / 'curated.jsonl'}" in result.output
    assert "[3/6] expand: started on 16 records" in result.output
    # One estimate, after enhance: expand asks at most 16 rewrites + 16 answers, quality 16 verdicts
    # (variety keeps half of expand's most, 32).
    assert result.output.count("estimate: the rest of the run takes ") == 1
    assert "(48 replies at most, at " in result.output
    assert f"Log:          {run_dir / 'lift-local.log'}" in result.output
    # Each LLM phase asked for exactly what it needed: 16 answers, 16 rewrites + 16 answers, 16 verdicts.
    assert len(rewriter.conversations_sent) == 48
    assert len(judge.conversations_sent) == 16


def test_interrupted_phase_resumes_without_recomputing_anything_finished(tmp_path, sample, run):
    result, _, _ = run(sample, judge=FakeChat(judge_reply, name="fake-judge", fail_after=5))
    assert isinstance(result.exception, FakeChatInterrupted)
    assert "quality" not in manifest(tmp_path)["phases"]  # the phase did not finish...

    result, rewriter, judge = run(sample)
    assert result.exit_code == 0, result.output
    assert rewriter.calls == []  # enhance and expand were finished: not run again
    assert "[5/6] variety: unchanged" in result.output
    assert len(judge.conversations_sent) == 16 - 5  # ...but its 5 stored verdicts were not asked again
    assert manifest(tmp_path)["phases"]["quality"]["records_out"] == 6


def test_unchanged_run_does_nothing_and_changed_parameter_reruns_from_its_phase(tmp_path, sample, run):
    assert run(sample)[0].exit_code == 0
    first = manifest(tmp_path)["phases"]

    result, rewriter, judge = run(sample)
    assert result.exit_code == 0
    assert rewriter.calls == [] and judge.calls == []
    assert manifest(tmp_path)["phases"] == first

    result, rewriter, judge = run(sample, "--set", "variety.keep=0.75")
    assert result.exit_code == 0, result.output
    assert "[2/6] enhance: unchanged" in result.output and "[3/6] expand: unchanged" in result.output
    assert "[5/6] variety: 32 → 24 records" in result.output
    assert "[6/6] quality: 24 → 6 records" in result.output
    assert rewriter.calls == []
    assert len(judge.conversations_sent) == 24 - 16  # only the records the judge had not seen
    after = manifest(tmp_path)["phases"]
    assert after["enhance"] == first["enhance"] and after["expand"] == first["expand"]

    result, rewriter, _ = run(sample, "--set", "variety.keep=0.75", "--set", "enhance.temperature=0.2")
    assert "[2/6] enhance: 16 → 16 records" in result.output
    assert len(rewriter.calls) > 0  # new sampling parameters: new replies


def test_skipped_phases_and_limit(tmp_path, sample, run):
    result, rewriter, judge = run(sample, "--skip", "enhance", "--skip", "expand", "--limit", "10", "--seed", "3")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path)
    assert m["input"]["records"] == 10 and m["input"]["limit"] == 10
    assert m["phases"]["enhance"] == {"status": "skipped"} and m["phases"]["expand"] == {"status": "skipped"}
    assert m["phases"]["variety"]["records_in"] == 10
    assert rewriter.calls == []


@pytest.mark.parametrize(
    "config, expected",
    [
        ("[qualty]\ntop = 5\n", "unknown section [qualty]"),
        ("[quality]\ntopp = 5\n", "[quality]: unknown key 'topp' (known: temperature, max_tokens, seed, top,"),
        ("[variety]\nvariance = 'half'\n", "[variety] variance: must be a number, got 'half'"),
        ("[enhance]\nmax_tokens = 1.5\n", "[enhance] max_tokens: must be an integer, got 1.5"),
        ("[quality\ntop = 5\n", "not valid TOML"),
        ("[run]\nskip = ['enhanse']\n", "cannot skip unknown phase 'enhanse'"),
        ("[run]\nskip = 3\n", "[run] skip must be a list of phase names, got 3"),
        ("[run]\nrays = 'auto'\n", "[run]: unknown key 'rays' (known: ray, replicas, gpus_per_replica,"),
        ("[prompts]\nexpand_nlu = 'mine.toml'\n",  # the run expands code: this prompt would be ignored
         "[prompts]: 'expand_nlu' is not used with these phase parameters (enhance: enhance; expand: enhance, "
         "expand_code; quality: judge)"),
    ],
)
def test_config_errors_are_clear(tmp_path, sample, run, config, expected):
    path = tmp_path / "lift.toml"
    path.write_text(config)
    result, rewriter, _ = run(sample, "--config", str(path))
    assert result.exit_code == 1
    assert f"Error: {path}" in result.output and expected in result.output
    assert "Traceback" not in result.output
    assert rewriter.calls == []


def test_bad_task_on_the_command_line_is_clear(sample, run):
    result, _, _ = run(sample, "--set", "expand.task=math")
    assert result.exit_code == 1
    assert "--set expand.task=math: must be one of 'nlu', 'code', got 'math'" in result.output


def test_a_judge_prompt_with_expected_scores_is_refused_not_ignored():
    """Expected scores judge with judge_digits (the default): a [prompts] judge would silently go unused."""
    with pytest.raises(ConfigError, match=r"'judge' is not used with these phase parameters .* quality: judge_digits"):
        load_config(overrides=["prompts.judge='mine.toml'"])
    assert load_config(overrides=["prompts.judge='mine.toml'", "quality.expected=false"]).prompts == {"judge": "mine.toml"}


def test_bad_set_override_is_clear(sample, run):
    result, _, _ = run(sample, "--set", "quality-top=5")
    assert result.exit_code == 1
    assert "--set 'quality-top=5': expected SECTION.KEY=VALUE" in result.output


def test_bad_judge_template_fails_before_any_phase_runs(tmp_path, sample, run):
    bad = tmp_path / "judge.toml"
    bad.write_text('system = "Score it."\nuser = "$instruction"\n')  # the judge must see $output too
    result, rewriter, _ = run(sample, "--set", f"prompts.judge='{bad}'")
    assert result.exit_code == 1
    assert f"{bad}: the user message must contain $output" in result.output
    assert rewriter.calls == [] and not (tmp_path / "run" / "1-enhance.jsonl").exists()


def test_run_removes_duplicates_first_and_benchmark_items_after_expansion(tmp_path, run):
    """A repeated record and a GSM8K test question in a real sample: dedup drops the repeat before any model
    sees it, decontamination drops the question (and its rewrites' answers that repeat it), and the report
    shows each next to what it matched."""
    items = json.loads((SHARED_DATA / "code_alpaca_2k.json").read_text())[200:216]
    question = json.loads((SHARED_DATA / "benchmarks" / "gsm8k_test.jsonl").read_text().splitlines()[0])["question"]
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps([*items, items[3], {"instruction": question, "input": "", "output": "18"}]))
    result, rewriter, _ = run(sample)
    assert result.exit_code == 0, result.output
    assert "[1/6] dedup: 18 → 17 records" in result.output
    phases = manifest(tmp_path)["phases"]
    assert phases["dedup"]["stats"]["removed"] == {"exact": 1, "near": 0, "semantic": 0}
    assert len(rewriter.conversations_sent) == 17 * 3  # the repeat was never rewritten
    decontaminate = phases["decontaminate"]
    assert decontaminate["stats"]["by_benchmark"]["gsm8k"] >= 1
    (removed, *_) = read_records(tmp_path / "run" / decontaminate["side"]["removed"])
    assert removed.meta["contaminated_by"] == "GSM8K/0" and removed.meta["benchmark_text"] == question
    report = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Deduplication</h2>" in report and "The kept record it duplicates" in report
    assert "<h2>Decontamination</h2>" in report and "The benchmark item it matched" in report
    assert "records contained benchmark test items" in report  # the warning at the top
    assert (tmp_path / "run" / "figures" / "dedup_removed.png").is_file()
    assert (tmp_path / "run" / "figures" / "decontaminate_removed.png").is_file()


def test_cluster_settings_come_from_the_run_section_and_the_command_line(tmp_path):
    path = tmp_path / "lift.toml"
    path.write_text('[run]\nray = "10.0.0.5:6379"\nreplicas = 8\ngpus_per_replica = 1\nskip = ["expand"]\n')
    assert load_config(path).cluster == ClusterConfig(ray="10.0.0.5:6379", replicas=8, gpus_per_replica=1)
    given = {("run", "ray"): ("--ray", "auto"), ("run", "replicas"): ("--replicas", 2)}
    assert load_config(path, given=given).cluster.ray == "auto"
    assert load_config(path, given={("run", "replicas"): ("--replicas", 2)}).cluster.replicas == 2
    assert load_config().cluster.ray is None  # without it, the run stays in this process


def test_ray_option_alone_means_the_cluster_of_this_machine(tmp_path, sample, run, monkeypatch):
    chosen = []

    def executor_for(cluster, bench, echo):
        chosen.append(cluster)
        return contextlib.nullcontext(Local(bench))

    monkeypatch.setattr("lift_local.pipeline.executor_for", executor_for)
    result, _, _ = run(sample, "--replicas", "3", "--ray")
    assert result.exit_code == 0, result.output
    assert chosen == [ClusterConfig(ray="auto", replicas=3)]


def test_run_takes_a_jury_from_the_command_line_or_the_config(tmp_path, sample, run):
    folders = [str(tmp_path / name) for name in ("judge-a", "judge-b")]  # model folders, as a user gives them
    jury = {folder: FakeChat(judge_reply, name=folder) for folder in folders}
    result, _, _ = run(sample, "--judge", folders[0], "--judge", folders[1], judge=jury)
    assert result.exit_code == 0, result.output
    scored = read_records(tmp_path / "run" / "6-quality-scores.jsonl")
    assert scored and all([v["model"] for v in r.meta["judges"]] == folders for r in scored)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["models"]["judge"] == " + ".join(folders)
    assert load_config(overrides=["models.judge=['a', 'b']"]).models.chosen("judge") == ("a", "b")


@pytest.mark.slow  # imports Ray
def test_ray_alone_starts_a_cluster_on_this_machine_where_none_runs_and_says_so(monkeypatch, tmp_path):
    """As ray.init() does: join the cluster this machine belongs to, or else start one (Ray itself stands in
    here: the real clusters are in test_ray.py)."""
    import ray

    from lift_local.ray_executor import RayExecutor
    from lift_local.workbench import Workbench

    calls, said = [], []

    def init(address=None, **options):  # no cluster runs anywhere: only a new one can be started
        calls.append(address)
        if address is not None:
            raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    RayExecutor(ClusterConfig(ray="auto"), Workbench(tmp_path), said.append).connect()
    assert calls == ["auto", None]
    assert said == ["Ray: no Ray cluster was running: started one on this machine (2 CPUs, 0 GPUs)"]
    with pytest.raises(ClusterError, match="cannot reach the Ray cluster at '10.0.0.5:6379'"):
        RayExecutor(ClusterConfig(ray="10.0.0.5:6379"), Workbench(tmp_path), said.append).connect()


def test_the_run_writes_a_dataset_card_the_hub_reads(tmp_path, sample, run):
    from huggingface_hub import DatasetCard

    result, _, _ = run(sample, "--license", "cc-by-nc-4.0")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path)
    path = tmp_path / "run" / "README.md"
    text = path.read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "cc-by-nc-4.0" and front["task_categories"] == ["text-generation"]
    assert front["size_categories"] == ["n<1K"] and front["source_datasets"] == [sample.name]
    assert front["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "curated.jsonl"}]}]
    assert DatasetCard.load(path).data.license == "cc-by-nc-4.0"  # the Hub's own parser reads it too
    assert f"- input: `{sample.name}`\n- sha256: `{m['input']['sha256']}`" in text and m["license"] == "cc-by-nc-4.0"
    assert str(tmp_path) not in text and str(sample.parent) not in text  # no path of the curating machine
    for phase, entry in m["phases"].items():
        assert f"| {phase} | done | {entry['records_in']} | {entry['records_out']} |" in text
    decontaminate = m["phases"]["decontaminate"]["stats"]
    assert f"{decontaminate['removed']} of {decontaminate['records_in']} records contained a benchmark" in text
    assert "| humaneval | 164 |" in text
    quality = m["phases"]["quality"]["stats"]["scores"]["total"]
    assert f"mean {quality['mean']:5.1f}" in text  # the judge's score distribution
    embedder = m["model_sha256"]["embedder"][0]
    assert len(embedder) == 64 and f"| embedder | `{m['models']['embedder']}` | `{embedder}` |" in text
    assert "## Fine-tuning check\n\nNot run." in text

    result, _, _ = run(sample, "--license", "Apache 2.0")
    assert result.exit_code == 1 and "--license: must be a licence id such as apache-2.0" in result.output
