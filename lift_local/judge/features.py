"""What a fitted scorer reads of a record (`FeatureSpec`): the judge's per-dimension expected scores, the
record's length, the hidden states of a frozen open model over the question and answer, and the embedder's
vectors of both.

Hidden states are a reward head's input: one forward pass of a causal LM over the chat template (the question
as the user's turn, the answer as the assistant's), no generation, pooled over the tokens at one layer. A
middle layer carries more of what a reference judge rewards than the last (docs/judges.md), and a model cut
after that layer computes its states for a fraction of the cost, so `HiddenStates` loads only the
layers it reads. Every feature vector is cached like an embedding: a run started again computes none twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..cpu_engine import computes_bfloat16
from ..embed import cached_vectors, model_identity
from ..errors import InputError
from .protocol import DIMENSIONS, Verdict

if TYPE_CHECKING:
    from ..embed import Embedder
    from ..llm import StatesModel
    from ..records import Record
    from ..store import Store

Pooling = Literal["mean", "answer", "last"]
POOLINGS: tuple[Pooling, ...] = ("mean", "answer", "last")
KINDS = ("judge", "length", "hidden", "embedder")  # the feature sets, in the order of a scorer's columns


@dataclasses.dataclass(frozen=True)
class HiddenSpec:
    """Which hidden states: the reader model's layer `layer` (1 = the first decoder layer's output),
    pooled `pooling` ("mean": over every token; "answer": over the answer's; "last": the last token), over at
    most `max_tokens` tokens (the answer is cut, the question kept)."""

    reader: str
    layer: int
    pooling: Pooling = "answer"
    max_tokens: int = 512


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The features a scorer reads, each optional: the expected per-dimension scores of the `judges`, the
    `length` (log characters of question and of answer), `hidden` states, the `embedder`'s vectors."""

    judges: tuple[str, ...] = ()
    length: bool = False
    hidden: HiddenSpec | None = None
    embedder: str | None = None

    @property
    def kinds(self) -> list[str]:
        given = {"judge": bool(self.judges), "length": self.length, "hidden": self.hidden is not None,
                 "embedder": self.embedder is not None}
        return [kind for kind in KINDS if given[kind]]



def judge_features(verdicts: Sequence[Sequence[Verdict]]) -> np.ndarray:
    """(records x judges*4) expected dimension scores in points; NaN where a judge gave no valid verdict."""
    rows = []
    for record_verdicts in verdicts:
        row = []
        for verdict in record_verdicts:
            scores = (verdict.expected or verdict.scores) if verdict.ok else None
            row += [scores[dim] if scores else math.nan for dim in DIMENSIONS]
        rows.append(row)
    return np.array(rows, dtype=float).reshape(len(verdicts), -1)


def length_features(records: Sequence[Record]) -> np.ndarray:
    """log(1 + characters) of each record's question (instruction and input) and answer."""
    return np.log1p([[len(r.instruction) + len(r.input), len(r.output)] for r in records])


def embedding_features(records: Sequence[Record], embedder: Embedder) -> np.ndarray:
    """The question's and the answer's embeddings, their elementwise product and their cosine."""
    questions = embedder.embed([question(r) for r in records])
    answers = embedder.embed([r.output for r in records])
    unit_q = questions / np.maximum(np.linalg.norm(questions, axis=1, keepdims=True), 1e-12)
    unit_a = answers / np.maximum(np.linalg.norm(answers, axis=1, keepdims=True), 1e-12)
    cosine = np.sum(unit_q * unit_a, axis=1, keepdims=True)
    return np.hstack([questions, answers, questions * answers, cosine])


def question(record: Record) -> str:
    return f"{record.instruction}\n\n{record.input}" if record.input else record.instruction


class HiddenStates:
    """A frozen causal LM read at one layer (`HiddenSpec`), one forward pass per record, behind a cache.

    The states come from vLLM's pooling runner (`llm.backend.load_reader`): the model is cut after the layer
    read (the layers above it are never loaded) and each token's state is that layer's output under the
    model's final norm; lift-local pools the tokens. bfloat16 where the hardware computes in it (a GPU, a CPU
    with AVX-512 BF16 or AMX: 2.2x as fast as float32 there when measured through transformers, with the same
    agreement, docs/judges.md), float32 elsewhere.
    """

    STATES = "vllm: final norm of the layer's output"  # what a cached feature is of: part of its key

    def __init__(self, folder: Path, spec: HiddenSpec, store: Store | None = None, batch_size: int = 32):
        self.folder, self.spec, self.store, self.batch_size = Path(folder), spec, store, batch_size
        self.identity = model_identity(self.folder)
        self._loaded: Any = None

    @functools.cached_property
    def dtype(self) -> str:
        """A cached feature is one of this dtype: the two differ in the third digit."""
        import torch

        return reader_dtype("cuda" if torch.cuda.is_available() else "cpu")

    def _load(self) -> tuple[Any, StatesModel]:
        if self._loaded is None:
            from transformers import AutoTokenizer

            from ..llm.backend import load_reader

            layers = json.loads((self.folder / "config.json").read_text())["num_hidden_layers"]
            if not 1 <= self.spec.layer <= layers:
                raise InputError(self.folder, None, f"has layers 1-{layers}; layer {self.spec.layer} was asked for")
            reader = load_reader(self.spec.reader, self.spec.layer, self.dtype)
            self._loaded = (AutoTokenizer.from_pretrained(self.folder), reader)
        return self._loaded

    def features(self, records: Sequence[Record]) -> np.ndarray:
        """(records x hidden size) float32 features, computed only for records not in the cache, shortest
        first (a batch of similar lengths)."""
        keyed = {self._key(r): r for r in records}

        def compute(keys: list[str]) -> np.ndarray:
            tokenizer, reader = self._load()
            chats = [encode(tokenizer, question(keyed[key]), keyed[key].output, self.spec.max_tokens) for key in keys]
            states = reader.states([tokens for tokens, _, _ in chats])
            return np.array([pooled(layer, start, end, self.spec.pooling)
                             for layer, (_, start, end) in zip(states, chats)], dtype=np.float32)

        return cached_vectors([self._key(r) for r in records], self.store, compute, self.batch_size,
                              order=lambda key: len(question(keyed[key])) + len(keyed[key].output),
                              desc=f"hidden states ({self.folder.name})", unit="record")

    def _key(self, record: Record) -> str:
        spec = self.spec
        text = "\x1f".join(map(str, (self.identity, spec.layer, spec.pooling, spec.max_tokens, question(record),
                                      record.output, self.dtype, self.STATES)))
        return hashlib.sha256(text.encode()).hexdigest()


def pooled(states: np.ndarray, start: int, end: int, pooling: Pooling) -> np.ndarray:
    """One record's (tokens x hidden size) states pooled: the mean over every token, over the answer's
    [start, end), or the last token; an empty answer: the mean over its question's tokens."""
    if pooling == "mean" or end == start:
        return states.mean(axis=0)
    return states[start:end].mean(axis=0) if pooling == "answer" else states[-1]


def reader_dtype(device: str) -> str:
    """bfloat16 where the hardware computes in it (a GPU, a CPU with AVX-512 BF16 or AMX), else float32."""
    return "bfloat16" if device.startswith("cuda") or (device == "cpu" and computes_bfloat16()) else "float32"


def encode(tokenizer: Any, question: str, answer: str, max_tokens: int) -> tuple[list[int], int, int]:
    """The chat's token ids (the question as the user's turn, the answer as the assistant's) and where the
    answer's tokens are, [start, end); the answer is cut so that the whole fits in `max_tokens`."""
    user = [{"role": "user", "content": question}]
    prefix = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    chat = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": answer}], tokenize=False)
    begin = chat.find(answer, len(prefix) - 1) if answer else len(prefix)
    end = begin + len(answer)
    encoded = tokenizer(chat, add_special_tokens=False, return_offsets_mapping=True)
    head, body, tail = [], [], []
    for token, (offset, _) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        (head if offset < begin else body if offset < end else tail).append(token)
    room = max(max_tokens - len(head) - len(tail), 0)
    return head + body[:room] + tail, len(head), len(head) + min(len(body), room)


def feature_matrix(records: Sequence[Record], verdicts: Sequence[Sequence[Verdict]], spec: FeatureSpec,
                   kit: Any) -> tuple[np.ndarray, list[str]]:
    """Every feature of `spec` for `records`, and the name of each column; `verdicts[i]` are record i's
    verdicts by `spec.judges`, in their order; `kit` gives the reader and the embedder."""
    parts: list[tuple[np.ndarray, list[str]]] = []
    if spec.judges:
        parts.append((judge_features(verdicts), [f"judge {j}: {dim}" for j in spec.judges for dim in DIMENSIONS]))
    if spec.length:
        parts.append((length_features(records), ["log question characters", "log answer characters"]))
    if spec.hidden:
        states = kit.reader(spec.hidden).features(records)
        parts.append((states, [f"hidden {i}" for i in range(states.shape[1])]))
    if spec.embedder:
        vectors = embedding_features(records, kit.embedder())
        size = (vectors.shape[1] - 1) // 3
        names = [f"{part} {i}" for part in ("question", "answer", "product") for i in range(size)]
        parts.append((vectors, [*names, "question-answer cosine"]))
    return np.hstack([matrix for matrix, _ in parts]), [name for _, names in parts for name in names]


def model_digests(spec: FeatureSpec, kit: Any) -> dict[str, dict[str, str]]:
    """The digest of each model's weights that `spec` reads with, as `kit` has them (the embedder: the one it
    embeds with, whatever its name)."""
    found = {}
    if spec.judges:
        found["judge"] = {name: kit.digest("judge", name) for name in spec.judges}
    if spec.hidden:
        found["reader"] = {spec.hidden.reader: kit.digest("reader", spec.hidden.reader)}
    if spec.embedder:
        found["embedder"] = {spec.embedder: kit.embedder().identity}
    return found
