"""Fine-tuning one arm of `lift-local ab`: a LoRA adapter (PEFT) on the base model, trained by TRL's SFTTrainer.

Every arm is trained from the same base model by the same `Recipe` and seed, so that the arms differ in their
records alone. A record is one exchange under the base model's own chat template: the user turn
(`exports.as_messages`: the instruction, then the input) is the prompt, the assistant turn the completion,
and only the completion's tokens carry loss (TRL's conversational prompt-completion format).

An arm's folder holds its adapter (`adapter/`, which `PeftModel.from_pretrained(base, folder)` loads) and
`training.json`: the fingerprint of what decided the adapter (records, base weights, recipe, precision,
library versions), the recipe and what training measured. An arm whose fingerprint is unchanged is not
trained again; an interrupted training resumes from its last checkpoint (`checkpoints-FINGERPRINT/`, one
every tenth of the optimizer steps, removed once the adapter is written).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from .. import console
from ..cpu_engine import environment_kept
from ..errors import ModelError
from ..exports import as_messages
from ..pipeline import sha256_file
from ..records import Record, atomic_path
from . import device
from .recipe import Recipe

with environment_kept():  # trl sets VLLM_LOGGING_LEVEL=ERROR, which every vLLM engine started later would obey
    from trl import SFTConfig, SFTTrainer

TRAINING = "training.json"
ADAPTER = "adapter"
_LIBRARIES = ("torch", "transformers", "peft", "trl")
CHECKPOINT_SECONDS = 60.0  # of training between checkpoints: what an interruption can lose at most


@dataclasses.dataclass(frozen=True)
class Trained:
    """A finished arm: its adapter and what training measured (read back from `training.json`)."""

    adapter: Path
    fingerprint: str
    records: int
    steps: int
    tokens: int  # tokens the model read in training, every epoch counted (no padding)
    seconds: float  # of the training call that finished it, model loading included
    losses: list[float]  # training loss per optimizer step
    resumed_from: int | None  # the optimizer step it resumed from, if it was interrupted
    trained_now: bool = False  # trained by this call (False: found finished)

    def epoch_losses(self, epochs: int) -> tuple[float, float]:
        """The mean loss of the first and of the last epoch's steps: one step's loss is too noisy to compare."""
        per_epoch = max(1, len(self.losses) // epochs)
        return (sum(self.losses[:per_epoch]) / per_epoch, sum(self.losses[-per_epoch:]) / per_epoch)

    @property
    def tokens_per_second(self) -> float | None:
        """Throughput of an uninterrupted training; None when it resumed (part of the work was done before)."""
        return self.tokens / self.seconds if self.resumed_from is None and self.seconds else None


def examples(records: Sequence[Record]) -> list[dict[str, Any]]:
    """TRL's conversational prompt-completion examples: the loss falls on the completion alone."""
    turns = [as_messages(record) for record in records]
    return [{"prompt": t[:1], "completion": t[1:]} for t in turns]


def answer_tokens(records: Sequence[Record], tokenizer: Any, max_length: int) -> list[int]:
    """How many tokens of each record's answer fall within `max_length`, where TRL cuts examples: a record with
    none teaches nothing (TRL drops it), nor does one with an empty answer (counted as none)."""
    counts = []
    for example, record in zip(examples(records), records, strict=True):
        prompt = len(_token_ids(tokenizer, example["prompt"], add_generation_prompt=True))
        whole = len(_token_ids(tokenizer, example["prompt"] + example["completion"]))
        counts.append(max(0, min(whole, max_length) - prompt) if record.output.strip() else 0)
    return counts


def fingerprint(base: Path, records: Sequence[Record], recipe: Recipe) -> str:
    """Everything that decides an arm's adapter: its records, the base model's files, the recipe, the precision
    and the training libraries' versions."""
    decided_by = {
        "records": [[r.instruction, r.input, r.output] for r in records],
        "base": sha256_file(base),
        "recipe": dataclasses.asdict(recipe),
        "precision": device.precision(),
        "libraries": {name: version(name) for name in _LIBRARIES},
    }
    return hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode("utf-8")).hexdigest()


def finished(out_dir: Path, key: str) -> Trained | None:
    """The arm in `out_dir` if it finished training with the fingerprint `key`."""
    try:
        done = json.loads((Path(out_dir) / TRAINING).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    adapter = Path(out_dir) / ADAPTER
    if done.get("fingerprint") != key or not (adapter / "adapter_config.json").is_file():
        return None
    return Trained(adapter=adapter, **{field.name: done[field.name] for field in dataclasses.fields(Trained)
                                       if field.name not in ("adapter", "trained_now")})


def train(base: Path, records: Sequence[Record], recipe: Recipe, out_dir: Path, *, label: str = "training",
          callbacks: Sequence[TrainerCallback] = ()) -> Trained:
    """Fine-tune a LoRA adapter on `records` into `out_dir`, or return the one already there for the same
    fingerprint; an interrupted training in `out_dir` resumes from its last checkpoint.

    The trainer's logs go where file descriptors 1 and 2 point (the log file, under `console.logs_to`); its
    progress bar, named `label`, goes to lift-local's terminal. `callbacks`: more for the trainer.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    key = fingerprint(base, records, recipe)
    done = finished(out_dir, key)
    if done is not None:
        return done
    checkpoints = out_dir / f"checkpoints-{key[:16]}"
    for stale in out_dir.glob("checkpoints-*"):  # of another fingerprint: other records, recipe or base
        if stale != checkpoints:
            shutil.rmtree(stale)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None

    trainer = build_trainer(base, records, recipe, checkpoints,
                            callbacks=[Progress(label), Checkpoints(CHECKPOINT_SECONDS), *callbacks])
    trainer.train(resume_from_checkpoint=last)
    with atomic_path(out_dir / ADAPTER, folder=True) as tmp:
        trainer.model.save_pretrained(tmp)
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    trained = Trained(
        adapter=out_dir / ADAPTER, fingerprint=key, records=len(lengths), steps=trainer.state.global_step,
        tokens=sum(lengths) * recipe.epochs, seconds=round(time.perf_counter() - started, 2),
        losses=[entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        resumed_from=int(Path(last).name.rpartition("-")[2]) if last else None, trained_now=True,
    )
    stored = {name: value for name, value in dataclasses.asdict(trained).items() if name not in ("adapter", "trained_now")}
    stored.update(recipe=dataclasses.asdict(recipe), base=str(base))
    with atomic_path(out_dir / TRAINING) as tmp:  # from here on the arm counts as finished
        tmp.write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return trained


def build_trainer(base: Path, records: Sequence[Record], recipe: Recipe, checkpoints: Path,
                  callbacks: Sequence[TrainerCallback] = ()) -> SFTTrainer:
    """TRL's trainer of a LoRA adapter on `records` by `recipe`, its examples tokenized and labelled."""
    model, tokenizer = load_base(base)
    return SFTTrainer(model=model, args=sft_config(recipe, checkpoints), train_dataset=Dataset.from_list(examples(records)),
                      processing_class=tokenizer, peft_config=lora_config(recipe), callbacks=list(callbacks))


def load_base(base: Path) -> tuple[Any, Any]:
    """The base model for training, its weights in `device.precision`, and its tokenizer."""
    tokenizer = load_tokenizer(base)
    try:
        return AutoModelForCausalLM.from_pretrained(base, dtype=device.dtype()), tokenizer
    except (OSError, ValueError) as err:
        raise ModelError(f"base model {base}: cannot be loaded for training: {err}") from None


def load_tokenizer(base: Path) -> Any:
    """The base model's tokenizer, which must have a chat template: the arms' records are exchanges under it."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise ModelError(f"base model {base}: cannot load its tokenizer: {err}") from None
    if not tokenizer.chat_template:
        raise ModelError(f"base model {base}: its tokenizer has no chat template; give an instruct model")
    return tokenizer


def sft_config(recipe: Recipe, output_dir: Path) -> SFTConfig:
    """The trainer's arguments for `recipe`; checkpoints in `output_dir`."""
    on_gpu = device.gpu()
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=recipe.epochs,
        learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation,
        lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup,
        weight_decay=recipe.weight_decay,
        max_length=recipe.max_length,
        seed=recipe.seed,
        data_seed=recipe.seed,
        # Batches of similar lengths: in random batches of 4 padding was 24-58% of the demo arms' tokens.
        train_sampling_strategy="group_by_length",
        completion_only_loss=True,
        bf16=device.precision() == "bfloat16",
        use_cpu=not on_gpu,
        # Recomputing activations saves a GPU's memory for large models; a CPU has the memory, not the time.
        gradient_checkpointing=on_gpu,
        save_strategy="no",  # `Checkpoints` asks for them
        save_total_limit=1,
        logging_steps=1,
        log_level="info",
        disable_tqdm=True,  # `Progress` shows the steps on the terminal
        dataloader_pin_memory=on_gpu,
        report_to="none",
    )


def lora_config(recipe: Recipe) -> LoraConfig:
    targets = recipe.lora_targets if recipe.lora_targets == "all-linear" else \
        [name.strip() for name in recipe.lora_targets.split(",") if name.strip()]
    return LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


class Checkpoints(TrainerCallback):
    """A checkpoint after the first step that ends `seconds` or more after the last one (or the start).

    By time, not by steps: at a tenth of the steps, the 6-step arm of scripts/bench_train.py wrote one every
    step, and lift-local trained at 0.89x of bare TRL's rate; a long arm loses at most `seconds` all the same.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.last >= self.seconds:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()


class Progress(TrainerCallback):
    """Optimizer steps with their rate and the time left on lift-local's terminal, the last loss beside them."""

    def __init__(self, label: str):
        self.label = label
        self.bar: console.Progress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = console.Progress(state.max_steps, self.label, "step", initial=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def _token_ids(tokenizer: Any, messages: list[dict[str, str]], **options: Any) -> list[int]:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **options)["input_ids"]
