"""Where `lift-local ab` computes, and in what precision: one decision for training and evaluation, so that every
arm is trained and scored alike and a change of it retrains and re-evaluates (it is in both fingerprints)."""

from __future__ import annotations

from ..cpu_engine import computes_bfloat16


def gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def precision() -> str:
    """"bfloat16" on a GPU and on a CPU that computes in it (AVX-512 BF16 or AMX), else "float32".

    In bfloat16 the base model's weights are stored in it and the trainer autocasts the rest; the LoRA weights
    and the optimizer stay in float32 (PEFT keeps adapters in float32). Against float32 weights under autocast
    (which casts every frozen weight again in each forward pass), on this CPU one epoch trained 1.5x as fast
    with the same losses to the second digit, and evaluation ran 1.2-1.4x as fast, scores within a few items
    of 200 of float32's (docs/ab.md (a))."""
    return "bfloat16" if gpu() or computes_bfloat16() else "float32"


def dtype():
    """The torch dtype of the base model's weights, by `precision`."""
    import torch

    return torch.bfloat16 if precision() == "bfloat16" else torch.float32
