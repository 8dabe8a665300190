"""Decontamination, after expansion (rewrites are new text) and before selection: records that contain a
benchmark's test item are removed, so that an evaluation of the curated data's model means something.

The test sets of HumanEval, MBPP, GSM8K, MMLU, ARC (Challenge, Easy) and TruthfulQA ship in the package
(`lift_local/data/benchmarks/`, see its README), so the check works offline; users add their own files.

**The rule: long n-gram overlap, measured as coverage of the benchmark item.** A record contaminated by an
item contains most of the item's words in runs that the record shares: the item's words covered by its
n-grams found in the record, as a share of its words, must reach `coverage` (60%). Why:

- GPT-3 (Brown et al., 2020) flagged any shared 13-gram; it found that rule both too loose for long items
  (one stock phrase flags them) and blind to items shorter than 13 words. PaLM (Chowdhery et al., 2022)
  counted an item as contaminated when 70% of its 8-grams occur in the data; Llama 2 (Touvron et al.,
  2023) when over 80% of its tokens lie in matched n-grams of 10 or more tokens. Coverage of the item, as
  in both, ignores a stock phrase and measures how much of the item was reproduced.
- n-grams of `ngram` = 8 words as PaLM: an edit (a renamed variable, a changed word) breaks only the
  n-grams that contain it, so coverage of words (not of n-grams) loses little more than the edited words
  as long as runs of 8 words survive between edits. An item shorter than two n-grams (16 words: many
  MBPP, ARC, MMLU and TruthfulQA questions) must be contained whole: at 8 words, one stock phrase ("write
  a python function to count the number of") would cover most of it; with n-grams of a third of a short
  item's words (at least 4) such phrases flagged 68 of 5,013 clean records at 70% coverage and 261 at
  60%; contained whole, 2.
- 60% coverage, measured on planted items inside real records: with one word in 12 edited, 80% (Llama 2's
  share) caught about half of them, 60% 84-98% (HumanEval to GSM8K), and flags 2 of 5,013 clean records;
  50% began to flag clean Code Alpaca records by stock phrases ("write a function to find the").
- Text is compared as normalised words (NFKC, casefolded, punctuation dropped); every run of numbers is
  one word "0" and every code identifier (a word with an underscore or a digit; in a second reading of a
  text that declares a function, its parameters too) the word "_": a GSM8K problem with its numbers
  changed is still the problem, a HumanEval prompt with its function and parameters renamed (which its
  examples and docstring repeat) still the prompt, and a record's list of numbers no match for another.
- An item shorter than `min_words` words (e.g. "What is 2+2?") is not checked: it proves nothing and
  would match everywhere. The report counts them.
- The record's instruction, input and output are searched: a test item reproduced in an answer is
  contamination too. Items are the questions (HumanEval's prompt is its signature and docstring); the
  reference solutions are not: short generic code (MBPP's "return the maximum of two numbers") matched
  clean records, and a record that reproduces a test problem's solution reproduces its question too.

The optional semantic check (`semantic` > 0) embeds each record's instruction and input and each question,
and removes a record whose cosine similarity with a question reaches the threshold: paraphrases that share
no long n-gram. With all-MiniLM-L6-v2, MBPP questions reworded with synonyms scored 0.61-0.95 against
their item (median 0.85) and unrelated real records at most 0.67, so 0.75 is a reasonable start. It
compares every record with every question (n x 20k products), so it suits runs up to about 100k records
on a CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .. import figures
from ..errors import InputError, ParameterError
from ..figures import Plot
from ..manifest import RunFolder
from ..params import Params, option
from ..records import Record, parse_json_items, read_text
from . import Kit, Mapped, Outcome, Phase, Selection
from .dedup import normalise, record_text, report_bars, words

BUNDLED = ("humaneval", "mbpp", "gsm8k", "mmlu", "arc_challenge", "arc_easy", "truthfulqa")
DATA = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
METHODS = ("ngram", "semantic")
_CHUNK_RECORDS = 8192  # records whose words are matched in one numpy pass
_EXCERPT = 600  # characters of the benchmark item kept in a removed record's metadata
_FILTER_BITS = 24  # a bitmap of 2^24 bits (16 MiB) screens n-grams before the sorted keys are searched
_SIGNATURE = re.compile(r"\bdef\s+\w+\s*\(([^)]*)\)")
_PARAMETER = re.compile(r"(?:^|,)\s*\**(\w+)")


def _names(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return BUNDLED
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in BUNDLED]
    if unknown or not names:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown) or repr(text)}: choose from "
                         f"{', '.join(BUNDLED)}, or all, or none")
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class DecontaminateParams(Params):
    benchmarks: str = option(
        "all", f"Bundled test sets to check against, comma-separated ({', '.join(BUNDLED)}), all, or none.",
        metavar="NAMES", check=_names,
    )
    benchmark_file: tuple[str, ...] = option(
        (), "Your own test set to check against as well: JSONL, a JSON array, CSV or TSV, one item a line or "
        "row, its text in --benchmark-field. Repeatable.", metavar="FILE",
    )
    benchmark_field: str = option("question", "The field or column of --benchmark-file that holds an item's text.")
    ngram: int = option(8, "Words per n-gram: an item's words count as found when they lie in a run of this "
                        "many words that the record contains; an item shorter than two n-grams must be contained whole.",
                        low=4)
    coverage: float = option(
        0.6, "A record is contaminated by an item when the item's words found in it reach this share.",
        low=0, low_open=True, high=1,
    )
    min_words: int = option(6, "Items of fewer words are not checked (too generic to prove anything).", low=1)
    semantic: float = option(
        0.0, "Also remove records whose instruction and input have at least this cosine similarity with a "
        "benchmark question (paraphrases), e.g. 0.75; 0 turns the check off (and the embedder is not loaded).",
        low=0, high=1,
    )
    # What the user's files held: a changed file re-runs the phase in `lift-local run`.
    files_sha256: str = dataclasses.field(default="", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _names(self.benchmarks) and not self.benchmark_file:
            raise ParameterError(type(self).__name__, "benchmarks",
                                 "is 'none' and there is no benchmark_file: nothing to check against")
        digest = hashlib.sha256(self.benchmark_field.encode())
        for file in self.benchmark_file:
            read_benchmark_file(Path(file), self.benchmark_field)  # a bad file fails now, not after expansion
            digest.update(Path(file).read_bytes())
        object.__setattr__(self, "files_sha256", digest.hexdigest() if self.benchmark_file else "")


@dataclasses.dataclass(frozen=True)
class Item:
    """A benchmark's test item: its question, to look for."""

    benchmark: str
    id: str  # e.g. "GSM8K/17"
    text: str


@dataclasses.dataclass(frozen=True)
class Overlap:
    """What `select` decides on for one record: the benchmark n-grams it contains, its nearest question."""

    ngrams: np.ndarray  # indices into the index's n-grams, ascending
    nearest: int = -1  # the item whose embedding is nearest (-1: semantic check off)
    cosine: float = 0.0


def read_benchmark_file(path: Path, field: str) -> list[Item]:
    """A user's test set: its items' `field`, named by their `id` or `task_id` field, else their line or row."""
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""),
                                delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            rows = [(f"row {number} (line {reader.line_num})", row) for number, row in enumerate(reader)]
        except csv.Error as err:
            raise InputError(path, f"line {reader.line_num}", f"malformed CSV: {err}") from None
        if field not in (reader.fieldnames or []):
            raise InputError(path, "line 1", f"no column '{field}' (set --benchmark-field); its columns are: "
                                             f"{', '.join(reader.fieldnames or []) or 'none'}")
    else:
        rows = parse_json_items(path, read_text(path))
    items = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise InputError(path, where, "expected a JSON object per item")
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            found = f"its fields are: {', '.join(map(str, row))}" if field not in row else f"got {text!r}"
            raise InputError(path, where, f"no text in field '{field}' (set --benchmark-field); {found}")
        name = row.get("id", row.get("task_id", where))
        items.append(Item(path.stem, f"{path.stem}/{name}", text))
    if not items:
        raise InputError(path, None, "the file holds no benchmark items")
    return items


def bundled_items(name: str) -> list[Item]:
    with gzip.open(DATA / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [Item(name, item["id"], item["text"]) for item in map(json.loads, handle)]


def match_words(text: str) -> list[str]:
    """Normalised words; each run of numbers is the word "0", each code identifier (has_close_elements,
    arr2: letters with an underscore or a digit) the word "_"."""
    return _mark(words(normalise(text)))


def _mark(found: list[str]) -> list[str]:
    marked: list[str] = []
    for word in found:
        if word.isdigit():
            if marked and marked[-1] == "0":
                continue
            word = "0"
        elif not word.isalpha():
            word = "_"
        marked.append(word)
    return marked


def word_variants(text: str) -> list[list[str]]:
    """The text's words, and, when it declares a function, the same with its parameters as "_" too: a
    renamed parameter then changes no word, and a parameter named like a word of the prose does not hide
    the prose from the first variant."""
    text = normalise(text)
    found = _mark(words(text))
    if "def" not in text:
        return [found]
    declared = {name for signature in _SIGNATURE.findall(text) for name in _PARAMETER.findall(signature)}
    return [found, ["_" if word in declared else word for word in found]] if declared else [found]


def run_length(words: int, ngram: int) -> int:
    """The n of an item's n-grams: `ngram`, or the whole item when it is shorter than two n-grams."""
    return ngram if words >= 2 * ngram else words


@dataclasses.dataclass
class Index:
    """Every n-gram of every item, hashed: `keys` sorted, each key's (item, offset, length) entries in
    `entries[starts[k]:starts[k + 1]]`. Words outside the items' vocabulary cannot match and break runs."""

    items: list[Item]
    lengths: np.ndarray  # words per item
    checked: np.ndarray  # bool per item: long enough to check
    vocabulary: dict[str, int]
    windows: list[int]  # the n-gram lengths in use
    keys: np.ndarray  # uint64, sorted, unique
    starts: np.ndarray
    entries: np.ndarray  # (m, 3) int64: item, offset, length
    screen: np.ndarray = dataclasses.field(init=False)  # bool per low `_FILTER_BITS` bits of the keys

    def __post_init__(self) -> None:
        self.screen = np.zeros(1 << _FILTER_BITS, dtype=bool)
        self.screen[(self.keys & np.uint64((1 << _FILTER_BITS) - 1)).astype(np.intp)] = True

    @classmethod
    def build(cls, items: list[Item], ngram: int, min_words: int) -> Index:
        vocabulary: dict[str, int] = {}
        variants = [[[vocabulary.setdefault(word, len(vocabulary)) for word in variant]
                     for variant in word_variants(item.text)] for item in items]
        lengths = np.array([len(v[0]) for v in variants], dtype=np.int64)
        checked = lengths >= min_words
        keys, entries = [np.empty(0, np.uint64)], [np.empty((0, 3), np.int64)]
        for number in np.flatnonzero(checked).tolist():
            width = run_length(int(lengths[number]), ngram)
            for variant in variants[number]:  # words at the same offsets in each
                hashes = _window_hashes(np.array(variant, dtype=np.int64), width)
                keys.append(hashes)
                entries.append(np.stack([np.full(len(hashes), number), np.arange(len(hashes)),
                                         np.full(len(hashes), width)], axis=1))
        all_keys, all_entries = np.concatenate(keys), np.concatenate(entries)
        order = np.argsort(all_keys, kind="stable")
        all_keys, all_entries = all_keys[order], all_entries[order]
        unique, starts = np.unique(all_keys, return_index=True)
        windows = sorted({run_length(int(n), ngram) for n in lengths[checked]})
        return cls(items, lengths, checked, vocabulary, windows, unique, np.r_[starts, len(all_keys)], all_entries)

    def find(self, texts: list[str]) -> list[np.ndarray]:
        """For each text, the indices of the keys it contains; a chunk of texts is matched at once."""
        found = []
        for top in range(0, len(texts), _CHUNK_RECORDS):
            chunk = texts[top:top + _CHUNK_RECORDS]
            ids, bounds, owners = [], [0], []
            for number, text in enumerate(chunk):  # -1 for a word no item has, and between variants
                for variant in word_variants(text):
                    ids.extend(self.vocabulary.get(word, -1) for word in variant)
                    ids.append(-1)
                    bounds.append(len(ids))
                    owners.append(number)
            array = np.array(ids, dtype=np.int64)
            unknown = np.r_[0, np.cumsum(array < 0)]
            hits, positions = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
            for width in self.windows:
                if len(array) < width or not len(self.keys):
                    continue
                hashes = _window_hashes(array, width)
                low = (hashes & np.uint64((1 << _FILTER_BITS) - 1)).astype(np.intp)
                candidates = np.flatnonzero(self.screen[low] & (unknown[width:] - unknown[:-width] == 0))
                slot = np.minimum(np.searchsorted(self.keys, hashes[candidates]), len(self.keys) - 1)
                match = self.keys[slot] == hashes[candidates]
                hits.append(slot[match])
                positions.append(candidates[match])
            segment = np.searchsorted(bounds, np.concatenate(positions), side="right") - 1
            keys, owner = np.concatenate(hits), np.array(owners, dtype=np.int64)[segment]
            per_text = [np.empty(0, np.int64)] * len(chunk)
            for number in np.unique(owner).tolist():
                per_text[number] = np.unique(keys[owner == number])
            found += per_text
        return found

    def coverage(self, keys: np.ndarray) -> dict[int, float]:
        """The share of each item's words that the found `keys` cover, for the items they touch."""
        if not len(keys):
            return {}
        spans = np.concatenate([self.entries[self.starts[k]:self.starts[k + 1]] for k in keys.tolist()])
        shares = {}
        for item in np.unique(spans[:, 0]).tolist():
            covered = np.zeros(self.lengths[item], dtype=bool)
            for _, offset, length in spans[spans[:, 0] == item].tolist():
                covered[offset:offset + length] = True
            shares[item] = float(covered.mean())
        return shares


_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2^64
_INVERSE = pow(_BASE, -1, 2**64)


def _window_hashes(ids: np.ndarray, width: int) -> np.ndarray:
    """A 64-bit polynomial hash of every run of `width` word ids, one per start position, in two passes
    whatever the width: prefix sums of id * B^k, each difference scaled back by B^-i (wrapping arithmetic)."""
    count = len(ids) - width + 1
    powers = np.cumprod(np.r_[np.uint64(1), np.full(len(ids) - 1, _BASE, np.uint64)], dtype=np.uint64)
    inverses = np.cumprod(np.r_[np.uint64(1), np.full(count - 1, _INVERSE, np.uint64)], dtype=np.uint64)
    prefix = np.r_[np.uint64(0), np.cumsum((ids + 1).astype(np.uint64) * powers, dtype=np.uint64)]
    return (prefix[width:] - prefix[:count]) * inverses


@functools.lru_cache(maxsize=4)
def _index(names: tuple[str, ...], files: tuple[str, ...], field: str, digest: str, ngram: int, min_words: int) -> Index:
    """The index of the chosen test sets; `digest` (of the files' bytes) makes a changed file a new index."""
    items = [item for name in names for item in bundled_items(name)]
    items += [item for file in files for item in read_benchmark_file(Path(file), field)]
    return Index.build(items, ngram, min_words)


class Decontaminate(Phase, name="decontaminate", title="Decontamination", params=DecontaminateParams, order=40,
                    roles=("embedder",),
                    sides={"removed": "Also write the removed records to this file, each naming the benchmark item it matched."}):
    """Remove records that contain a benchmark's test item (HumanEval, MBPP, GSM8K, MMLU, ARC, TruthfulQA
    ship with lift-local; add your own with --benchmark-file).

    A record is contaminated by an item when at least --coverage of the item's words lie in runs of --ngram
    words that the record (instruction, input and output) also contains; words are compared casefolded,
    without punctuation, every run of numbers alike, every code identifier alike; an item shorter than two
    n-grams must be contained whole, one shorter than --min-words is not checked. With --semantic, records
    whose instruction and input embed close to a benchmark question are removed too. Each removed record carries lift.contaminated_by (the
    item's id), lift.benchmark, lift.method, lift.similarity and lift.benchmark_text.
    """

    @property
    def index(self) -> Index:
        p = self.params
        return _index(_names(p.benchmarks), p.benchmark_file, p.benchmark_field, p.files_sha256, p.ngram, p.min_words)

    def map(self, batch: list[Record], kit: Kit) -> list[Mapped]:
        index = self.index
        found = index.find([record_text(record) for record in batch])
        if self.params.semantic <= 0:
            return [Mapped(record, Overlap(keys)) for record, keys in zip(batch, found, strict=True)]
        embedder = kit.embedder()
        targets = embedder.embed([item.text for item in index.items])
        targets /= np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
        vectors = embedder.embed([f"{record.instruction}\n{record.input}".strip() for record in batch])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        nearest, cosine = [], []
        for top in range(0, len(vectors), _CHUNK_RECORDS):
            similarity = vectors[top:top + _CHUNK_RECORDS] @ targets.T
            best = similarity.argmax(axis=1)
            nearest += best.tolist()
            cosine += similarity[np.arange(len(best)), best].tolist()
        return [Mapped(record, Overlap(keys, n, c))
                for record, keys, n, c in zip(batch, found, nearest, cosine, strict=True)]

    def select(self, features: list[Overlap]) -> Selection:
        """A record goes when its best n-gram coverage reaches --coverage, else when its nearest question
        reaches --semantic; it names the item it matched best."""
        index, params = self.index, self.params
        meta: dict[int, dict[str, Any]] = {}
        for position, feature in enumerate(features):
            shares = index.coverage(feature.ngrams)
            # Ties go to the longer item: one MBPP question can be another's with words added.
            best = max(shares, key=lambda item: (shares[item], index.lengths[item]), default=None)
            if best is not None and shares[best] >= params.coverage:
                match = (best, "ngram", shares[best])
            elif params.semantic > 0 and feature.cosine >= params.semantic:
                match = (feature.nearest, "semantic", feature.cosine)
            else:
                continue
            item = index.items[match[0]]
            meta[position] = {"contaminated_by": item.id, "benchmark": item.benchmark, "method": match[1],
                              "similarity": round(match[2], 4), "benchmark_text": item.text[:_EXCERPT]}
        removed = sorted(meta)
        benchmarks = list(dict.fromkeys(item.benchmark for item in index.items))
        by_benchmark = Counter(meta[i]["benchmark"] for i in removed)
        stats = {
            "records_in": len(features),
            "kept": len(features) - len(removed),
            "removed": len(removed),
            "by_method": {method: sum(meta[i]["method"] == method for i in removed) for method in METHODS},
            "by_benchmark": {name: by_benchmark.get(name, 0) for name in benchmarks},
            "items": dict(Counter(item.benchmark for item in index.items)),
            "too_short": dict(Counter(item.benchmark for item, ok in zip(index.items, index.checked) if not ok)),
        }
        kept = [i for i in range(len(features)) if i not in meta]
        return Selection(kept, {"removed": removed}, meta, stats)

    def summary(self, outcome: Outcome) -> list[str]:
        stats = outcome.stats
        found = ", ".join(f"{name} {n}" for name, n in stats["by_benchmark"].items() if n) or "none"
        return [f"records in        {stats['records_in']}",
                f"contaminated      {stats['removed']} ({found})",
                f"records kept      {stats['kept']}"]

    def why_empty(self, outcome: Outcome) -> str:
        return f"every one of {outcome.stats['records_in']} records contains a benchmark test item"

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        items = sum(stats["items"].values())
        return f"removed {stats['removed']} ({figures.compact(stats['by_method'])}); checked against {items} items"

    @classmethod
    def warnings(cls, entry) -> list[str]:
        stats = entry.stats
        if not stats.get("removed"):
            return []
        found = ", ".join(f"{name} {n}" for name, n in stats["by_benchmark"].items() if n)
        return [f"<b>Decontamination:</b> {stats['removed']} records contained benchmark test items "
                f"({figures.e(found)}) and were removed; a model trained on the rest can be evaluated on them."]

    @classmethod
    def report(cls, run: RunFolder) -> tuple[str, list[Plot]]:
        return _report(run)


def _report(run: RunFolder) -> tuple[str, list[Plot]]:
    stats = run.done("decontaminate").stats
    removed = run.records("decontaminate", "removed")
    figure = report_bars(stats["by_benchmark"], "records removed")
    alt = "Bars: records removed for containing an item of each benchmark."
    caption = (
        f"{stats['removed']} of {stats['records_in']} records contained a benchmark test item "
        f"({figures.compact(stats['by_method'])}), by the benchmark of the item they matched best."
    )
    plot = figures.as_plot("decontaminate_removed", figure, alt=alt, caption=caption)
    parts = ["<h2>Decontamination</h2>", figures.figure_html(plot)]
    if stats.get("too_short"):
        parts.append(f"<p class=\"muted\">Items too short to check: {figures.e(figures.compact(stats['too_short']))}.</p>")
    for benchmark, count in stats["by_benchmark"].items():
        examples = [r for r in removed if r.meta.get("benchmark") == benchmark][:figures.EXAMPLES]
        if not examples:
            continue
        items = [Record(r.meta["benchmark_text"], "", "", r.meta["contaminated_by"]) for r in examples]
        parts.append(f"<h3>{figures.e(benchmark)} ({count})</h3>")
        parts.append(figures.examples_html(
            ("Removed record", "dropped", examples),
            ("The benchmark item it matched", "kept", items),
            facts=lambda r: [("by", r.meta["method"]), ("similarity", f"{r.meta['similarity']:.3f}")] if r.meta else [],
        ))
    return "\n".join(parts), [plot]
