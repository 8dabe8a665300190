"""Training throughput of `lift-local ab` against a bare TRL run of the same recipe on the same data; prints a
Markdown report (docs/ab.md holds the last one).

Each pair trains the same records twice in this process, in turns that alternate which goes first:
- lift-local: `ab.train.train` into a fresh folder: fingerprint (hashing the base model's weights), model
  loading, TRL's SFTTrainer with lift-local's recipe, a checkpoint every tenth of the steps, the progress
  bar, the adapter and training.json written;
- bare TRL: what a TRL user writes for the same recipe: the model and tokenizer loaded, `SFTTrainer` with an
  `SFTConfig` of the same hyperparameters, precision (`ab.device.precision`), length-grouped batches and no
  gradient checkpointing, a `LoraConfig` of the same rank, alpha, dropout and targets, no checkpoints, the
  adapter saved at the end.
Both count the same tokens (the prepared examples' lengths, every epoch): tokens per second are end to end,
model loading included, by wall clock and by the process's CPU time (steadier on a shared machine).
The ratio within each pair is the number that matters: its two runs are minutes apart at most.

    .venv/bin/python scripts/bench_train.py [--records 48] [--epochs 1] [--pairs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the shared data beside the checkout


def lift_local_run(base, records, recipe, folder: Path) -> int:
    from lift_local.ab.train import train

    return train(base, records, recipe, folder, label="lift-local").tokens


def bare_trl_run(base, records, recipe, folder: Path) -> int:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lift_local.ab import device
    from lift_local.exports import as_messages

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=device.dtype())
    turns = [as_messages(record) for record in records]
    dataset = Dataset.from_list([{"prompt": t[:1], "completion": t[1:]} for t in turns])
    config = SFTConfig(
        output_dir=str(folder), num_train_epochs=recipe.epochs, learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.batch_size, gradient_accumulation_steps=recipe.gradient_accumulation,
        lr_scheduler_type=recipe.scheduler, warmup_steps=recipe.warmup, weight_decay=recipe.weight_decay,
        max_length=recipe.max_length, seed=recipe.seed, bf16=device.precision() == "bfloat16", use_cpu=True,
        train_sampling_strategy="group_by_length", gradient_checkpointing=False,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
    )
    lora = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=recipe.lora_targets, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    trainer.train()
    trainer.model.save_pretrained(folder / "adapter")
    return sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * recipe.epochs


def timed(run, *args) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = run(*args)
    return tokens, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=48, help="Code Alpaca records trained on")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    from lift_local.cpu_engine import preload_libraries, relaunch_preloaded

    relaunch_preloaded([__file__, *sys.argv[1:]])  # with the libraries `lift-local ab` runs with

    import torch

    from lift_local import console, models
    from lift_local.ab.device import precision
    from lift_local.ab.recipe import Recipe
    from lift_local.records import read_records

    if args.threads:
        torch.set_num_threads(args.threads)
    base = models.ensure_present(models.resolve("student"))
    records = read_records(DATA / "code_alpaca_2k.json")[: args.records]
    recipe = dataclasses.replace(Recipe(), epochs=args.epochs)
    sides = {"lift-local": lift_local_run, "bare TRL": bare_trl_run}
    rows, ratios = [], {"wall": [], "cpu": []}
    for pair in range(args.pairs):
        order = list(sides) if pair % 2 == 0 else list(reversed(sides))
        measured = {}
        for side in order:
            # The trainers' logs to a file, as under `lift-local ab`; lift-local's progress bar on the terminal.
            with tempfile.TemporaryDirectory() as tmp, console.logs_to(Path(tmp) / "train.log", side):
                measured[side] = timed(sides[side], base, records, recipe, Path(tmp))
        (ours, ours_wall, ours_cpu), (theirs, theirs_wall, theirs_cpu) = measured["lift-local"], measured["bare TRL"]
        assert ours == theirs, f"the two runs trained different tokens: {ours} and {theirs}"
        ratios["wall"].append((ours / ours_wall) / (theirs / theirs_wall))
        ratios["cpu"].append((ours / ours_cpu) / (theirs / theirs_cpu))
        rows.append(f"| {pair + 1} ({order[0]} first) | {ours} | {ours / ours_wall:.1f} | {theirs / theirs_wall:.1f} | "
                    f"{ratios['wall'][-1]:.3f} | {ours / ours_cpu:.1f} | {theirs / theirs_cpu:.1f} | {ratios['cpu'][-1]:.3f} |")
    print(f"Training throughput, lift-local against bare TRL: {args.records} Code Alpaca records, recipe "
          f"{recipe.describe()}; computed in {precision()}; torch threads {torch.get_num_threads()}; tcmalloc and "
          f"Intel OpenMP {'loaded' if preload_libraries() else 'not installed'}.\n")
    print("| pair | tokens | lift-local tok/s (wall) | bare TRL tok/s (wall) | ratio | lift-local tok/s (CPU) | "
          "bare TRL tok/s (CPU) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print(f"\nMedian ratio lift-local / bare TRL: {statistics.median(ratios['wall']):.3f} by wall clock, "
          f"{statistics.median(ratios['cpu']):.3f} by CPU time.")


if __name__ == "__main__":
    main()
