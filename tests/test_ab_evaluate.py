"""Evaluation through lm-eval with the real packaged model: its scores equal a direct computation of the same
log-likelihoods with transformers (base and with a LoRA adapter), held-out NLL likewise, an interrupted
evaluation redoes only what is missing, and the generation benchmarks score real programs and numbers.

The arithmetic is checked in float32, where a direct computation agrees to the last digits; bfloat16, where a
CPU computes in it, is checked against float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from conftest import REPO, SMOLLM

from lift_local import models
from lift_local.ab import benchmarks, device
from lift_local.ab import evaluate as evaluation
from lift_local.ab.evaluate import evaluate
from lift_local.errors import ConfigError
from lift_local.records import read_records

LIMIT = 2  # items per benchmark: a few seconds per model on two cores
CHOICES = ["arc_easy", "truthfulqa_mc", "mmlu"]  # both ways of comparing choices (per character, whole)


@pytest.fixture(scope="module", autouse=True)
def float32():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device, "precision", lambda: "float32")
        yield patch


@pytest.fixture(scope="module")
def base():
    return models.ensure_present(models.resolve("judge", SMOLLM))


@pytest.fixture(scope="module")
def heldout():
    return read_records(REPO / "lift_local" / "data" / "code_alpaca_sample.json")[:2]


@pytest.fixture(scope="module")
def lora(base, tmp_path_factory):
    """A LoRA adapter with random weights (not the usual zero start), so that it changes the model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("lora")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


class Direct:
    """The same log-likelihoods computed without lm-eval: one plain forward pass per (context, answer)."""

    def __init__(self, base, adapter=None):
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).eval()

    def context(self, question: str) -> str:
        return self.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                  add_generation_prompt=True)

    def loglikelihood(self, context: str, answer: str) -> tuple[float, int]:
        """Sum of the answer's token log-probabilities, and their count. As lm-eval does, whitespace that ends
        the context (the newline after the assistant's header) is scored with the answer."""
        stripped = context.rstrip()
        whole = self.tokenizer(stripped + context[len(stripped):] + answer).input_ids
        start = len(self.tokenizer(stripped).input_ids)
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(torch.tensor([whole])).logits[0].float(), dim=-1)
        return sum(float(logprobs[i - 1, whole[i]]) for i in range(start, len(whole))), len(whole) - start


def stored(work_dir, context: str, answer: str):
    """What the evaluation stored for a request in lm-eval's request cache."""
    from lm_eval.api.model import hash_args
    from sqlitedict import SqliteDict

    with SqliteDict(str(work_dir / "requests.db")) as cache:
        return cache[hash_args("loglikelihood", (context, answer))]


@pytest.fixture(scope="module")
def base_run(base, heldout, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("base")
    return work_dir, evaluate(base, None, CHOICES, limit=LIMIT, seed=0, heldout=heldout, work_dir=work_dir,
                              progress_label="base")


@pytest.mark.model
@pytest.mark.parametrize("adapted", [False, True], ids=["base", "lora"])
def test_scores_equal_a_direct_computation_of_the_same_log_likelihoods(adapted, base, lora, base_run, heldout,
                                                                       tmp_path):
    if adapted:  # one benchmark is enough to show the adapter is applied as PEFT applies it
        work_dir, names = tmp_path, CHOICES[:1]
        scores = evaluate(base, lora, names, limit=LIMIT, seed=0, heldout=heldout, work_dir=work_dir,
                          progress_label="lora")
    else:
        (work_dir, scores), names = base_run, CHOICES
    direct = Direct(base, lora if adapted else None)
    for name in names:
        config, metric = benchmarks.task_config(name, scores[name].ids)
        assert scores[name].ids == benchmarks.sample_ids(name, LIMIT, seed=0) and scores[name].kind == "accuracy"
        expected = []
        for doc in config["custom_dataset"]()["test"]:
            context = direct.context(doc["text"])
            lls = np.array([direct.loglikelihood(context, choice)[0] for choice in doc["choices"]])
            for choice, ll in zip(doc["choices"], lls, strict=True):
                assert stored(work_dir, context, choice)[0] == pytest.approx(ll, abs=2e-3)
            # ARC and MMLU compare choices per character of their text (acc_norm), TruthfulQA MC1 whole.
            per = np.array([len(c) for c in doc["choices"]]) if metric == "acc_norm" else 1
            expected.append(float(np.argmax(lls / per) == doc["answer"]))
        assert scores[name].values == expected, name
    # Held-out: the mean NLL per answer token, given the record's instruction and input.
    assert scores["heldout"].ids == [record.id for record in heldout] and scores["heldout"].kind == "nll"
    for record, value in zip(heldout, scores["heldout"].values, strict=True):
        prompt = record.instruction + (f"\n\n{record.input}" if record.input else "")
        ll, _ = direct.loglikelihood(direct.context(prompt), record.output)
        tokens = len(direct.tokenizer(record.output, add_special_tokens=False).input_ids)
        assert value == pytest.approx(-ll / tokens, rel=1e-4)


@pytest.mark.model
def test_the_adapter_changes_what_the_model_computes(base, lora, base_run, heldout, tmp_path, capfd):
    _, base_scores = base_run
    adapted = evaluate(base, lora, [], limit=None, seed=0, heldout=heldout, work_dir=tmp_path, progress_label="lora")
    assert all(abs(a - b) > 0.01 for a, b in zip(adapted["heldout"].values, base_scores["heldout"].values))
    # Nothing on stdout (lift-local's own lines go there); a progress bar with time left on stderr.
    out, err = capfd.readouterr()
    assert out == "" and "lora log-likelihoods: 100%" in err and "<00:00" in err


class Counting:
    """Counts the requests that reach the model, and can stop the evaluation after `stop_after` answers as
    an interruption (Ctrl-C, a killed process) would."""

    def __init__(self, monkeypatch, stop_after: int | None = None):
        self.requests, self.answers, self.stop_after, self.dtypes = 0, 0, stop_after, set()
        real = evaluation.score_packed

        def score(lm, requests, row_tokens):
            self.requests += len(requests)
            self.dtypes.add(lm.model.dtype)
            for answer in real(lm, requests, row_tokens):  # each one stored before it is given
                self.answers += 1
                yield answer
                if self.answers == self.stop_after:
                    raise KeyboardInterrupt

        monkeypatch.setattr(evaluation, "score_packed", score)


@pytest.mark.model
def test_an_interrupted_evaluation_redoes_only_the_missing_items(base, heldout, base_run, tmp_path, monkeypatch):
    _, expected = base_run
    monkeypatch.setattr(evaluation, "ROW_TOKENS", 96)  # several forward passes, as a long evaluation has
    run = dict(limit=LIMIT, seed=0, heldout=heldout, work_dir=tmp_path, progress_label="base")
    interrupted = Counting(monkeypatch, stop_after=10)
    with pytest.raises(KeyboardInterrupt):
        evaluate(base, None, CHOICES, **run)
    total = interrupted.requests
    assert interrupted.answers == 10 and total > 20  # 2 items of 4, 4 and ~5 choices, 2 records

    resumed = Counting(monkeypatch)
    same(evaluate(base, None, CHOICES, **run), expected)
    assert resumed.requests == total - 10  # the 10 stored answers are not asked again

    finished = Counting(monkeypatch)
    same(evaluate(base, None, CHOICES, **run), expected)
    assert finished.requests == 0


def same(scores, expected):
    """The same items and values (NLLs computed in other packings differ in the last float digits)."""
    assert scores.keys() == expected.keys()
    for name, s in scores.items():
        assert (s.ids, s.kind) == (expected[name].ids, expected[name].kind)
        assert s.values == pytest.approx(expected[name].values, rel=1e-5)


@pytest.mark.model
def test_another_model_in_the_same_folder_is_evaluated_afresh(base, lora, heldout, tmp_path, monkeypatch):
    evaluate(base, None, [], limit=None, seed=0, heldout=heldout, work_dir=tmp_path, progress_label="base")
    counting = Counting(monkeypatch)
    evaluate(base, lora, [], limit=None, seed=0, heldout=heldout, work_dir=tmp_path, progress_label="lora")
    assert counting.requests == len(heldout)
    assert json.loads((tmp_path / "model.json").read_text())["adapter"] is not None


@pytest.mark.model
def test_bfloat16_scores_stay_near_float32_and_a_change_of_precision_evaluates_afresh(base, heldout, base_run,
                                                                                     float32, tmp_path, monkeypatch):
    run = dict(limit=None, seed=0, heldout=heldout, work_dir=tmp_path, progress_label="base")
    exact = evaluate(base, None, [], **run)["heldout"].values
    float32.setattr(device, "precision", lambda: "bfloat16")
    try:
        counting = Counting(monkeypatch)
        rounded = evaluate(base, None, [], **run)["heldout"].values
    finally:
        float32.setattr(device, "precision", lambda: "float32")
    assert counting.requests == len(heldout) and counting.dtypes == {torch.bfloat16}
    assert json.loads((tmp_path / "model.json").read_text())["precision"] == "bfloat16"
    assert rounded != exact and rounded == pytest.approx(exact, rel=0.02)


@pytest.mark.model
def test_a_generation_benchmark_runs_on_the_real_model(base, tmp_path, monkeypatch):
    """A short answer generated on the CPU (HFLM's generation, as for GSM8K), its program run in the sandbox."""
    config = benchmarks._TASKS["humaneval"][0]
    monkeypatch.setitem(config, "generation_kwargs", {**config["generation_kwargs"], "max_gen_toks": 16})
    scores = evaluate(base, None, ["humaneval"], limit=1, seed=0, heldout=None, work_dir=tmp_path,
                      progress_label="base")
    assert scores["humaneval"].ids == benchmarks.sample_ids("humaneval", 1, seed=0)
    assert scores["humaneval"].values in ([0.0], [1.0])
    from sqlitedict import SqliteDict

    with SqliteDict(str(tmp_path / "requests.db")) as cache:
        (answer,) = cache.values()
    assert isinstance(answer, str) and answer.strip() and "<|im_end|>" not in answer


class FakeAnswers:
    """A fake of lm-eval's model for the generation benchmarks: it answers each prompt with `answer(item)`
    for the item whose question the prompt contains. No model: it proves the task definitions, lm-eval's flow
    and the scoring (GSM8K's number, the sandbox) on real items."""

    def __init__(self, names, answer):
        from lm_eval.api.model import LM

        by_question = {item["text"]: answer(name, item) for name in names for item in benchmarks.items(name).values()}

        class Fake(LM):
            tokenizer_name = "fake"

            def apply_chat_template(self, chat_history, add_generation_prompt=True):
                return "".join(f"<{m['role']}>{m['content']}" for m in chat_history) + "<assistant>"

            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for request in requests:
                    prompt = request.args[0]
                    out.append(by_question[max((q for q in by_question if q in prompt), key=len)])
                    self.cache_hook.add_partial("generate_until", request.args, out[-1])
                return out

            def loglikelihood(self, requests, disable_tqdm=False):
                raise AssertionError("the generation benchmarks ask for no log-likelihood")

            loglikelihood_rolling = loglikelihood

        self.lm = Fake()


@pytest.mark.parametrize("right", [True, False])
def test_the_generation_benchmarks_score_numbers_and_programs(right, tmp_path, monkeypatch, base):
    names = ["gsm8k", "humaneval", "mbpp"]

    def answer(name, item):
        if name == "gsm8k":
            number = benchmarks.final_number(item["answer"].split("####")[-1])
            return f"Step by step, the answer is {number if right else number + '1'}."
        code = item["canonical_solution"] if name == "humaneval" else item["code"]
        return f"```python\n{code if right else 'def broken(:'}\n```"

    fake = FakeAnswers(names, answer)
    monkeypatch.setattr(evaluation, "_hf_model", lambda *args: fake.lm)
    scores = evaluate(base, None, names, limit=2, seed=1, heldout=None, work_dir=tmp_path, progress_label="fake")
    assert {name: s.values for name, s in scores.items()} == {name: [float(right)] * 2 for name in names}


def test_an_unknown_benchmark_is_an_error_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "_hf_model", lambda *args: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="unknown benchmark hellaswag: choose from arc_easy, "):
        evaluate(tmp_path, None, ["arc_easy", "hellaswag"], limit=5, seed=0, heldout=None, work_dir=tmp_path / "w",
                 progress_label="base")
    assert not (tmp_path / "w").exists()
