"""`lift-local ab`: does the curated set train a better model than a random one of the same size, or than the
whole input? Each arm fine-tunes the same base model by the same recipe, and every model answers the same
benchmark items, offline.

- `recipe`: the fine-tuning recipe, the same for every arm; `device`: where and in what precision, the same
  for training and evaluation.
- `train`: one arm's LoRA adapter through PEFT and TRL's SFT trainer; skipped when unchanged, resumed when
  interrupted.
- `benchmarks`, `evaluate`, `sandbox`: the bundled benchmarks, evaluated through lm-evaluation-harness, per item.
- `run`: the arms, the checks before any training, and the comparison from start to end.
- `results`: scores with intervals, paired differences in words, the table, the figure and the report section.
"""
