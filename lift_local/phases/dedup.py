"""Deduplication, first in `lift-local run`: exact, near and semantic duplicates out before any model is
asked about them (a duplicate costs a rewrite, an expansion and a verdict, and weighs twice in training).

Three checks run in turn, each on the records the previous one kept:

- **exact**: a 64-bit BLAKE2b hash of the normalised instruction, input and output (Unicode NFKC,
  casefolded, every run of whitespace one space), so records that differ only in case, spacing or Unicode
  form are one.
- **near** and **semantic** compare the task and its answer, instruction and output, leaving the input out:
  in reading-comprehension data (Dolly's closed QA) several questions share one long passage as input,
  which would make distinct tasks look alike (on dolly_3k it did, at Jaccard 0.95 and cosine 0.99, the
  passage also filling the embedder's 256-token window).
- **near**: MinHash (rensa) of word 3-gram shingles of the normalised text. datatrove and Data-Juicer
  use 5-grams for web documents; instruction records are short (Code Alpaca's median is about 30 words),
  and one edited word changes up to n shingles: with one edit per 60 words, 5-grams at 0.8 found 47% of
  such copies among real records of 30-60 words, 3-grams 94%, with no more false matches. Locality-sensitive hashing in bands finds candidate pairs in linear time (sort by band
  key), and each candidate's estimated Jaccard similarity is checked against `near`. The bands are chosen
  for the threshold, weighing a missed duplicate ten times a false candidate, which verification removes
  (at 0.8 with 128 permutations: 14 bands of 9 rows, finding a pair at 0.8 with p = 0.87, at 0.85 with 0.97).
- **semantic**: cosine similarity of the embedder's embeddings (through the embedding cache variety
  fills, so a text is embedded once across runs and phases). All pairs among 1,000,000 records are out of reach
  (10^12 products), so as SemDeDup (Abbas et al., 2023) records are first clustered with k-means
  (about sqrt(n) clusters: cost ~ 4 n^1.5 d, least for that k) and all pairs are compared within each
  cluster; up to `_ONE_CLUSTER` records it is one cluster, i.e. exact. A duplicate pair split across two
  clusters is missed; docs/dedup.md measures how often.

Which record is kept: in input order, a record is a duplicate when an earlier record that is itself kept
is at least as similar as the threshold; it names the most similar such record. So the first of each group
is kept (the original before its copies; the user's order decides), and every dropped record is within the
threshold of the record it names, never at the end of a chain of near misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import figures
from ..figures import Plot
from ..manifest import RunFolder
from ..params import Params, option
from ..records import Record
from . import Kit, Mapped, Outcome, Phase, Selection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS = ("exact", "near", "semantic")
_WORDS = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_ONE_CLUSTER = 4096  # up to this many records the semantic check compares all pairs
_BLOCK = 2048  # rows of a similarity matrix computed at a time
_PAIRS = 1 << 20  # candidate pairs verified at a time
_MINHASH_CHUNK = 8192  # records shingled at once: 1M records' shingles as strings would take ~9 GiB
_MISS_WEIGHT = 10  # a missed near duplicate is lost; a false candidate only costs its verification


@dataclasses.dataclass(frozen=True)
class DedupParams(Params):
    near: float = option(
        0.8, "Near duplicates: two records whose word 3-gram shingles have at least this Jaccard similarity "
        "(MinHash estimate); 0 turns the check off.", low=0, high=1,
    )
    semantic: float = option(
        0.95, "Semantic duplicates: two records whose embeddings have at least this cosine similarity; 0 turns "
        "the check off (and the embedder is not loaded).", low=0, high=1,
    )
    shingle: int = option(3, "Words per shingle of the near-duplicate check.", low=1)
    num_perm: int = option(
        128, "MinHash permutations: more estimate similarity more closely, at 4 bytes each per record.", low=8
    )
    seed: int = option(0, "Seed of the MinHash permutations and of the k-means clustering.", low=0)


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What `select` decides on for one record: its id (to name it), hash, MinHash and embedding."""

    id: str
    exact: int
    minhash: np.ndarray | None  # (num_perm,) uint32, when the near check is on
    embedding: np.ndarray | None  # float32, when the semantic check is on


def normalise(text: str) -> str:
    """NFKC, casefolded, whitespace collapsed: what makes two texts the same text."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def words(text: str) -> list[str]:
    """The words of a normalised text (letters, digits and underscores; punctuation separates)."""
    return _WORDS.findall(text)


def record_text(record: Record) -> str:
    return "\n".join((record.instruction, record.input, record.output))


def task_text(record: Record) -> str:
    """What near and semantic duplicates are judged on: the task and its answer, without the input."""
    return f"{record.instruction}\n{record.output}"


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band): the LSH S-curve 1 - (1 - s^rows)^bands that best separates similarities
    below and above `threshold`, a missed duplicate weighing `_MISS_WEIGHT` times a false candidate."""
    s = np.linspace(0, 1, 501)
    below = s < threshold
    best, chosen = np.inf, (1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - s**rows) ** bands
            cost = np.trapezoid(p[below], s[below]) + _MISS_WEIGHT * np.trapezoid(1 - p[~below], s[~below])
            if cost < best:
                best, chosen = cost, (bands, rows)
    return chosen


class Dedup(Phase, name="dedup", title="Deduplication", params=DedupParams, order=10, roles=("embedder",),
            sides={"dropped": "Also write the duplicates to this file, each naming the record it duplicates."}):
    """Remove exact, near and semantic duplicates, keeping the first record of each group.

    Exact: the same instruction, input and output after Unicode normalisation, casefolding and collapsing
    whitespace. Near and semantic compare instruction and output (a passage shared as input does not make
    two tasks one): near, word 3-gram shingles with at least --near Jaccard similarity (MinHash with LSH);
    semantic, embeddings with at least --semantic cosine similarity (k-means clusters, all pairs within each). Each dropped record
    carries lift.duplicate_of (the kept record's id), lift.method and lift.similarity.
    """

    def map(self, batch: list[Record], kit: Kit) -> list[Mapped]:
        params = self.params
        hashes = [int.from_bytes(hashlib.blake2b(normalise(record_text(record)).encode(), digest_size=8).digest(),
                                 "little") for record in batch]
        signatures: Any = [None] * len(batch)
        if params.near > 0:
            import rensa  # a compiled extension: imported where used, so the report does not need it

            signatures = np.empty((len(batch), params.num_perm), dtype=np.uint32)
            for top in range(0, len(batch), _MINHASH_CHUNK):  # shingles only of a chunk at a time
                shingles = [_shingles(words(normalise(task_text(record))), params.shingle)
                            for record in batch[top:top + _MINHASH_CHUNK]]
                signatures[top:top + len(shingles)] = rensa.RMinHash.digests_from_token_sets(
                    shingles, params.num_perm, params.seed)
        embeddings: Any = [None] * len(batch)
        if params.semantic > 0:
            embeddings = kit.embedder().embed([task_text(record) for record in batch])
        return [
            Mapped(record, Fingerprint(record.id, exact, signature, embedding))
            for record, exact, signature, embedding in zip(batch, hashes, signatures, embeddings, strict=True)
        ]

    def select(self, features: list[Fingerprint]) -> Selection:
        """Exact, then near among the records exact kept, then semantic among those near kept."""
        params = self.params
        found: dict[int, tuple[int, str, float]] = {}  # dropped position -> (kept position, method, similarity)
        first: dict[int, int] = {}
        for position, feature in enumerate(features):
            kept = first.setdefault(feature.exact, position)
            if kept != position:
                found[position] = (kept, "exact", 1.0)
        bands = None
        if params.near > 0:
            alive = _alive(len(features), found)
            signatures = np.stack([features[i].minhash for i in alive])
            bands = lsh_bands(params.near, params.num_perm)
            pairs = _near_pairs(signatures, params.near, *bands)
            found.update(_named(alive, _leaders(*pairs), "near"))
        clusters = None
        if params.semantic > 0:
            alive = _alive(len(features), found)
            embeddings = np.stack([features[i].embedding for i in alive]).astype(np.float32, copy=False)
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
            clusters, pairs = _semantic_pairs(embeddings, params.semantic, params.seed)
            found.update(_named(alive, _leaders(*pairs), "semantic"))
        meta = {
            position: {"duplicate_of": features[kept].id, "method": method, "similarity": round(similarity, 4)}
            for position, (kept, method, similarity) in found.items()
        }
        removed = Counter(method for _, method, _ in found.values())
        stats = {
            "records_in": len(features),
            "kept": len(features) - len(found),
            "removed": {method: removed.get(method, 0) for method in METHODS},
            "lsh": {"bands": bands[0], "rows": bands[1]} if bands else None,
            "clusters": clusters,
        }
        return Selection(_alive(len(features), found), {"dropped": sorted(found)}, meta, stats)

    def summary(self, outcome: Outcome) -> list[str]:
        stats = outcome.stats
        removed = ", ".join(f"{n} {method}" for method, n in stats["removed"].items())
        return [f"records in        {stats['records_in']}", f"duplicates        {removed}",
                f"records kept      {stats['kept']}"]

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        return "removed " + ", ".join(f"{n} {method}" for method, n in stats["removed"].items())

    @classmethod
    def report(cls, run: RunFolder) -> tuple[str, list[Plot]]:
        return _report(run)


def _shingles(tokens: list[str], size: int) -> list[str]:
    """Word n-grams; a text shorter than one shingle is one shingle of all its words."""
    if len(tokens) <= size:
        return [" ".join(tokens)]
    return [" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1)]


def _alive(n: int, found: dict[int, Any]) -> list[int]:
    return [i for i in range(n) if i not in found]


def _named(alive: list[int], leaders: dict[int, tuple[int, float]], method: str) -> dict[int, tuple[int, str, float]]:
    """Leaders found among the `alive` positions, as positions in the whole batch."""
    return {alive[j]: (alive[i], method, similarity) for j, (i, similarity) in leaders.items()}


def _leaders(i: np.ndarray, j: np.ndarray, similarity: np.ndarray) -> dict[int, tuple[int, float]]:
    """Greedy in input order over pairs i < j at or above the threshold: j is a duplicate of its most similar
    earlier record that is itself kept. Every i < j is settled before j is reached."""
    order = np.lexsort((-similarity, j))
    dropped: dict[int, tuple[int, float]] = {}
    for a, b, s in zip(i[order].tolist(), j[order].tolist(), similarity[order].tolist()):
        if b not in dropped and a not in dropped:
            dropped[b] = (a, s)
    return dropped


def _near_pairs(signatures: np.ndarray, threshold: float, bands: int, rows: int):
    """Pairs (i < j) sharing an LSH bucket whose estimated Jaccard similarity reaches `threshold`.

    In each band, records are sorted by the band's key; each is paired with the first record of its bucket
    (the candidate leader) and with its predecessor there, so a bucket of k records yields 2k pairs, not k^2.
    """
    n = len(signatures)
    found = []
    multipliers = np.random.default_rng(0x5EED).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    for band in range(bands):
        block = signatures[:, band * rows:(band + 1) * rows].astype(np.uint64)
        keys = (block * multipliers).sum(axis=1)  # wraps modulo 2^64: a hash of the band's values
        order = np.argsort(keys, kind="stable")  # ties in input order: a bucket's first is its earliest
        sorted_keys = keys[order]
        same = sorted_keys[1:] == sorted_keys[:-1]
        if not same.any():
            continue
        starts = np.flatnonzero(np.r_[True, ~same])
        head = order[starts[np.searchsorted(starts, np.arange(n), side="right") - 1]]
        later = np.flatnonzero(np.r_[False, same])
        found.append(np.stack([head[later], order[later]], axis=1))
        found.append(np.stack([order[later - 1], order[later]], axis=1))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    pairs = np.unique(np.concatenate(found), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    similarity = np.concatenate([
        (signatures[chunk[:, 0]] == signatures[chunk[:, 1]]).mean(axis=1, dtype=np.float32)
        for chunk in np.array_split(pairs, max(1, len(pairs) // _PAIRS))
    ]) if len(pairs) else np.empty(0, np.float32)
    good = similarity >= threshold
    return pairs[good, 0], pairs[good, 1], similarity[good]


def _semantic_pairs(embeddings: np.ndarray, threshold: float, seed: int):
    """(clusters, (i, j, cosine)) of the pairs i < j in one k-means cluster whose cosine reaches `threshold`."""
    n = len(embeddings)
    labels = np.zeros(n, dtype=np.int64)
    clusters = 1
    if n > _ONE_CLUSTER:
        from sklearn.cluster import MiniBatchKMeans

        clusters = round(np.sqrt(n))
        rng = np.random.default_rng(seed)
        sample = embeddings[np.sort(rng.choice(n, size=min(n, 64 * clusters), replace=False))]
        # Random initial centroids: k-means++ costs k passes over the sample (15 s for 135 clusters of 20k
        # records, hours for 1,000 of 1M), and a finer partition is not needed, only a local one.
        kmeans = MiniBatchKMeans(n_clusters=clusters, init="random", random_state=seed, n_init=1,
                                 batch_size=4096, max_iter=20).fit(sample)
        labels = kmeans.predict(embeddings)
    order = np.argsort(labels, kind="stable")  # each cluster's members in input order
    bounds = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1], True])
    found_i, found_j, found_s = [], [], []
    for start, end in zip(bounds[:-1], bounds[1:]):
        members = order[start:end]
        vectors = embeddings[members]
        for top in range(0, len(members), _BLOCK):
            cosine = vectors[top:top + _BLOCK] @ vectors.T
            rows, cols = np.nonzero(cosine >= threshold)
            upper = cols > rows + top
            rows, cols = rows[upper], cols[upper]
            found_i.append(members[rows + top])
            found_j.append(members[cols])
            found_s.append(cosine[rows, cols])
    if not found_i:
        return clusters, (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    return clusters, (np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s))


# --- the report's section ---


def _report(run: RunFolder) -> tuple[str, list[Plot]]:
    stats = run.done("dedup").stats
    dropped = run.records("dedup", "dropped")
    kept = {record.id: record for record in run.records("dedup")}
    figure = report_bars(stats["removed"], "records removed")
    total = sum(stats["removed"].values())
    alt = "Bars: records removed as exact, near and semantic duplicates."
    caption = (
        f"{total} of {stats['records_in']} records removed as duplicates, by the check that found them (each "
        "check sees only what the previous kept). Exact: same normalised text; near: MinHash Jaccard of word "
        "3-grams; semantic: cosine of embeddings."
    )
    plot = figures.as_plot("dedup_removed", figure, alt=alt, caption=caption)
    parts = ["<h2>Deduplication</h2>", figures.figure_html(plot)]
    for method in METHODS:
        examples = [r for r in dropped if r.meta.get("method") == method][:figures.EXAMPLES]
        if not examples:
            continue
        parts.append(f"<h3>{method.title()} duplicates ({stats['removed'][method]})</h3>")
        parts.append(figures.examples_html(
            ("Removed", "dropped", examples),
            ("The kept record it duplicates", "kept", [kept[r.meta["duplicate_of"]] for r in examples]),
            facts=lambda r: [("similarity", f"{r.meta['similarity']:.3f}")] if "similarity" in r.meta else [],
        ))
    return "\n".join(parts), [plot]


def report_bars(counts: dict[str, int], label: str) -> Figure:
    """Horizontal bars of counts by name, each labelled with its count."""
    figure, (ax,) = figures.new_figure(8, 0.4 * len(counts) + 0.9)
    names, values = list(counts), list(counts.values())
    ax.barh(names, values, color=figures.DROPPED)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [1]) * 1.2)
    ax.set_xlabel(label)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value}", va="center")
    return figure
