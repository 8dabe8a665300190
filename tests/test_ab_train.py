"""Fine-tuning one arm (lift_local.ab.train) for real: the packaged SmolLM2-135M-Instruct on CPU, LoRA through
TRL's SFT trainer, three optimizer steps on two short Code Alpaca records."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import REPO
from peft import PeftModel
from transformers import TrainerCallback

from lift_local import models
from lift_local.ab import train as training
from lift_local.ab.recipe import Recipe
from lift_local.ab.train import ADAPTER, TRAINING, answer_tokens, build_trainer, examples, load_base, train
from lift_local.records import read_records

pytestmark = pytest.mark.model

# 2 records, 2 a batch, 3 epochs: 3 optimizer steps.
RECIPE = Recipe(epochs=3, batch_size=2, gradient_accumulation=1, learning_rate=2e-3, max_length=160, warmup=0.0,
                scheduler="constant")


@pytest.fixture(scope="module")
def base():
    return models.ensure_present(models.resolve("student"))


@pytest.fixture(scope="module")
def records():
    sample = read_records(REPO / "lift_local" / "data" / "code_alpaca_sample.json")
    return sorted(sample, key=lambda r: len(r.instruction + r.input + r.output))[:2]


@pytest.fixture(scope="module")
def trained(base, records, tmp_path_factory):
    return train(base, records, RECIPE, tmp_path_factory.mktemp("arm"))


def answer_nll(model, tokenizer, records) -> float:
    """Mean negative log-likelihood of the records' answer tokens, computed directly."""
    losses = []
    for example in examples(records):
        prompt = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
        whole = tokenizer.apply_chat_template(example["prompt"] + example["completion"], return_dict=True)["input_ids"]
        labels = [-100] * len(prompt) + whole[len(prompt):]
        with torch.no_grad():
            losses.append(model(input_ids=torch.tensor([whole]), labels=torch.tensor([labels])).loss.item())
    return sum(losses) / len(losses)


def test_only_the_answer_tokens_carry_loss(base, records, tmp_path):
    long_prompt = dataclasses.replace(records[0], instruction="Explain this. " * 60)  # fills max_length alone
    trainer = build_trainer(base, [*records, long_prompt], RECIPE, tmp_path)
    tokenizer = trainer.processing_class
    prepared = trainer.train_dataset
    assert len(prepared) == len(records)  # TRL drops the record whose answer starts beyond max_length
    for example, record in zip(prepared, records):
        ids, labels = example["input_ids"], example["labels"]
        start = next(i for i, label in enumerate(labels) if label != -100)
        assert labels[start:] == ids[start:]  # from the answer on, every token is a target ...
        assert tokenizer.decode(ids[start:]) == record.output + "<|im_end|>\n"  # ... and only the answer's
        assert "user\n" + record.instruction in tokenizer.decode(ids[:start])
    counts = answer_tokens([*records, long_prompt], tokenizer, RECIPE.max_length)
    assert counts == [sum(label != -100 for label in example["labels"]) for example in prepared] + [0]


def test_training_lowers_the_loss_on_its_records_and_the_adapter_changes_the_model(base, records, trained):
    assert trained.trained_now and trained.steps == 3 and len(trained.losses) == 3
    assert trained.tokens > 0 and trained.tokens_per_second > 0
    model, tokenizer = load_base(base)
    before = answer_nll(model, tokenizer, records)
    prompt = tokenizer.apply_chat_template(examples(records[:1])[0]["prompt"], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        base_logits = model(input_ids=prompt).logits
    tuned = PeftModel.from_pretrained(model, trained.adapter)
    tuned.eval()
    after = answer_nll(tuned, tokenizer, records)
    with torch.no_grad():
        tuned_logits = tuned(input_ids=prompt).logits
    assert after < before - 0.1, (before, after)
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)


def test_a_finished_arm_is_not_trained_again_unless_its_recipe_changes(base, records, trained, monkeypatch):
    class NoTraining(Exception):
        pass

    def refuse(*args, **kwargs):
        raise NoTraining

    monkeypatch.setattr(training, "build_trainer", refuse)
    weights = trained.adapter / "adapter_model.safetensors"
    written = weights.stat().st_mtime_ns
    again = train(base, records, RECIPE, trained.adapter.parent)
    assert not again.trained_now
    assert again.fingerprint == trained.fingerprint and again.losses == trained.losses
    assert weights.stat().st_mtime_ns == written
    with pytest.raises(NoTraining):  # another seed is another recipe: that arm must be trained
        train(base, records, dataclasses.replace(RECIPE, seed=1), trained.adapter.parent)


class StopAfterSaving(TrainerCallback):
    """Interrupts training as Ctrl-C would, right after the checkpoint of step `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class FirstStep(TrainerCallback):
    def __init__(self):
        self.began_at = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.began_at = state.global_step


def test_an_interrupted_arm_resumes_from_its_last_checkpoint(base, records, trained, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    with pytest.raises(KeyboardInterrupt):
        train(base, records, RECIPE, tmp_path, callbacks=[StopAfterSaving(2)])
    assert not (tmp_path / TRAINING).exists() and not (tmp_path / ADAPTER).exists()
    (checkpoints,) = tmp_path.glob("checkpoints-*")
    assert [path.name for path in checkpoints.glob("checkpoint-*")] == ["checkpoint-2"]

    first = FirstStep()
    resumed = train(base, records, RECIPE, tmp_path, callbacks=[first])
    assert first.began_at == 2 and resumed.resumed_from == 2 and resumed.steps == 3
    assert resumed.tokens_per_second is None  # part of the work was done before
    assert not checkpoints.exists()
    # The resumed arm is the arm trained without a break: the same losses and the same weights.
    assert resumed.losses == pytest.approx(trained.losses, rel=1e-4)
    from safetensors.torch import load_file

    ours, theirs = (load_file(path / "adapter_model.safetensors") for path in (resumed.adapter, trained.adapter))
    assert all(torch.allclose(ours[name], theirs[name], atol=1e-5) for name in theirs)

