"""The fine-tuning recipe of `lift-local ab`: one for every arm, printed before training and stored with the
results. It imports no torch, so that the command line builds its options from it at once.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..params import Params, option


@dataclasses.dataclass(frozen=True)
class Recipe(Params):
    """How every arm is fine-tuned: the same for all of them, so that only their records differ."""

    epochs: int = option(3, "Passes over each arm's records (the same for every arm).", low=1)
    learning_rate: float = option(2e-4, "Peak learning rate of the LoRA weights (AdamW).", low=0, low_open=True)
    lora_rank: int = option(8, "Rank of the LoRA update matrices.", low=1)
    lora_alpha: int = option(16, "LoRA scaling: updates are multiplied by alpha / rank.", low=1)
    # 0: on a CPU the dropout masks (a random draw over every adapted layer's input) cost a quarter of a step,
    # and the losses of one epoch moved by less than 0.002 without them (docs/ab.md (a)).
    lora_dropout: float = option(0.0, "Dropout on the LoRA path (e.g. 0.05 against over-fitting many epochs).",
                                 low=0, high=1)
    lora_targets: str = option("all-linear", "Modules that get LoRA: PEFT's 'all-linear' (every linear layer but "
                               "the output head) or comma-separated module names, e.g. q_proj,v_proj.")
    max_length: int = option(512, "Tokens per example (prompt and answer under the chat template); longer ones are "
                             "cut at the end, and a record whose answer starts beyond it is left out.", low=16)
    batch_size: int = option(4, "Examples per forward pass (padded to the longest of them: on a CPU, small batches "
                             "waste less).", low=1)
    gradient_accumulation: int = option(2, "Forward passes per optimizer step: an optimizer step sees "
                                        "batch_size x gradient_accumulation examples.", low=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = option(
        "cosine", "Learning-rate schedule after warm-up.")
    warmup: float = option(0.1, "Share of the optimizer steps spent warming the learning rate up from 0.", low=0, high=1)
    weight_decay: float = option(0.0, "AdamW weight decay.", low=0)
    seed: int = option(0, "Seed of the LoRA initialisation and the order of examples (and of the --limit sample).")

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation

    def describe(self) -> str:
        """The recipe on one line, as printed before training."""
        return ", ".join(f"{key} {value}" for key, value in dataclasses.asdict(self).items())
