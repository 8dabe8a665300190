"""LIFT phase 3, variety compression: keep the records whose embeddings vary most across principal components.

Embeddings are standardised per dimension, projected on the fewest principal components that explain
`variance` of the total variance, and each record is scored by the variance of its own coordinates
("row variance"); the top `keep` share is kept. Row variance depends on the sign of each component, so
it relies on scikit-learn's deterministic sign convention (largest loading of each component positive).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.ticker import PercentFormatter

from .. import figures
from ..errors import NothingSelected
from ..figures import Plot
from ..manifest import RunFolder
from ..params import Params, option
from ..records import Record, embedding_text
from . import Kit, Mapped, Outcome, Phase, Selection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CHUNK_ROWS = 8192  # rows processed at a time (standardising was fastest with 8k of 8k, 32k, 128k)


@dataclasses.dataclass(frozen=True)
class VarietyParams(Params):
    """The paper's: 95% of the variance, 20% of the records."""

    variance: float = option(
        0.95, "Use the fewest principal components whose cumulative explained variance reaches this share.",
        low=0, low_open=True, high=1,
    )
    keep: float = option(
        0.2, "Share of records to keep: those with the highest row variance.", low=0, low_open=True, high=1
    )


@dataclasses.dataclass(frozen=True)
class VarietySelection:
    """The outcome of `select`, with what the report needs to plot it."""

    params: VarietyParams
    row_variance: np.ndarray  # (n,) float32: each record's score
    cumulative_variance: np.ndarray  # share of variance explained by the first 1, 2, ... components
    n_components: int  # components used: the fewest whose cumulative share reaches `variance`
    threshold: float  # the smallest row variance kept
    kept: np.ndarray  # indices of the kept records, ascending

    @property
    def variance_explained(self) -> float:
        return float(self.cumulative_variance[self.n_components - 1])

    def stats(self) -> dict[str, Any]:
        """A JSON-ready summary for the run manifest and the report (per-record scores are in the records)."""
        return {
            "records_in": len(self.row_variance),
            "kept": len(self.kept),
            "keep": self.params.keep,
            "variance_target": self.params.variance,
            "n_components": self.n_components,
            "variance_explained": self.variance_explained,
            "explained_variance_cumulative": self.cumulative_variance.round(6).tolist(),
            "threshold": self.threshold,
        }


def select(embeddings: np.ndarray, params: VarietyParams) -> VarietySelection:
    """Score (n, d) embeddings by row variance and pick the top `params.keep` share.

    float32 throughout: at 1,000,000 x 384 the data is 1.5 GB, and the peak is about twice that.
    Ties in row variance are kept in input order.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (records x dimensions), got shape {embeddings.shape}")
    from sklearn.decomposition import PCA  # here: scikit-learn takes ~0.4 s to import, and only this needs it
    from sklearn.preprocessing import StandardScaler

    n = len(embeddings)
    if n < 2:
        raise ValueError(f"variety selection needs at least 2 records, got {n}")

    # Row chunks wherever a whole-matrix temporary would be needed: StandardScaler's float64 temporaries
    # and the n x k coordinates would each be as large as the data or larger, and slower than chunks.
    chunks = [slice(start, start + _CHUNK_ROWS) for start in range(0, n, _CHUNK_ROWS)]
    scaler = StandardScaler()
    for rows in chunks:
        scaler.partial_fit(embeddings[rows])
    if not np.any(scaler.var_ > 0):
        raise ValueError("all records have the same embedding: there is no variety to select by")
    standardised = np.empty_like(embeddings)
    for rows in chunks:
        standardised[rows] = scaler.transform(embeddings[rows])

    # All components, not n_components=variance: the report plots the whole explained-variance curve.
    pca = PCA(svd_solver="covariance_eigh").fit(standardised)
    cumulative = np.cumsum(pca.explained_variance_ratio_, dtype=np.float64)
    n_components = min(int(np.searchsorted(cumulative, params.variance)) + 1, len(cumulative))

    # PCA.transform restricted to the first n_components, a chunk at a time.
    components = pca.components_[:n_components]
    centre = pca.mean_ @ components.T
    row_variance = np.empty(n, dtype=np.float32)
    for rows in chunks:
        row_variance[rows] = (standardised[rows] @ components.T - centre).var(axis=1)

    n_keep = max(1, round(params.keep * n))
    ranking = np.argsort(-row_variance, kind="stable")
    return VarietySelection(
        params=params,
        row_variance=row_variance,
        cumulative_variance=cumulative,
        n_components=n_components,
        threshold=float(row_variance[ranking[n_keep - 1]]),
        kept=np.sort(ranking[:n_keep]),
    )


class Variety(Phase, name="variety", title="Variety compression", params=VarietyParams, order=50,
              roles=("embedder",), sides={"dropped": "Also write the records not kept to this file, with their row variance."}):
    """Keep the most diverse records (LIFT phase 3, variety compression).

    Embeds every record, standardises the embeddings, projects them on the principal components that
    explain --variance of the variance, and keeps the --keep share of records whose coordinates vary most
    (row variance). Written records keep their input order and carry their row variance in their
    metadata (lift.row_variance).
    """

    def map(self, batch: list[Record], kit: Kit) -> list[Mapped]:
        embeddings = kit.embedder().embed([embedding_text(record) for record in batch])
        return [Mapped(record, vector) for record, vector in zip(batch, embeddings, strict=True)]

    def select(self, features: list[np.ndarray]) -> Selection:
        """Kept and dropped records both keep their input order and carry their row variance."""
        if len(features) < 2:
            raise NothingSelected(f"variety selection needs at least 2 records, found {len(features)}")
        try:
            chosen = select(np.stack(features), self.params)
        except ValueError as err:  # e.g. every record embeds identically
            raise NothingSelected(str(err)) from None
        is_kept = np.zeros(len(features), dtype=bool)
        is_kept[chosen.kept] = True
        meta = {i: {"row_variance": score} for i, score in enumerate(chosen.row_variance.tolist())}
        keep = np.flatnonzero(is_kept).tolist()
        return Selection(keep, {"dropped": np.flatnonzero(~is_kept).tolist()}, meta, chosen.stats())

    def workload(self, records: int) -> tuple[int, int]:
        return 0, round(self.params.keep * records)

    def summary(self, outcome: Outcome) -> list[str]:
        stats, n = outcome.stats, outcome.stats["records_in"]
        return [
            f"records in        {n}",
            f"components used   {stats['n_components']} of {len(stats['explained_variance_cumulative'])}, "
            f"explaining {stats['variance_explained']:.1%} of the variance (target {stats['variance_target'] * 100:g}%)",
            f"records kept      {stats['kept']} ({stats['kept'] / n:.1%}), row variance >= {stats['threshold']:.4g}",
        ]

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        return (
            f"{stats['n_components']} components reach {stats['variance_target']:.0%} of the "
            f"variance; row-variance threshold {stats['threshold']:.4g}"
        )

    @classmethod
    def report(cls, run: RunFolder) -> tuple[str, list[Plot]]:
        return _report(run)


# --- the report's section ---


def _report(run: RunFolder) -> tuple[str, list[Plot]]:
    stats = run.done("variety").stats
    kept, dropped = run.records("variety"), run.records("variety", "dropped")
    plots = []
    if stats.get("explained_variance_cumulative"):
        chosen, target = stats["n_components"], stats["variance_target"]
        figure = _pca_figure(stats["explained_variance_cumulative"], target, chosen)
        alt = f"Line: cumulative explained variance by number of PCA components; {chosen} reach {target:.0%}."
        caption = (
            "Cumulative explained variance of the standardised embeddings. The chosen number of components "
            "is where the curve first reaches the target; a curve that rises slowly means the embeddings "
            "spread over many directions."
        )
        plots.append(figures.as_plot("pca_variance", figure, alt=alt, caption=caption))
    figure = _row_variance_figure(
        figures.meta_values(kept, "row_variance"), figures.meta_values(dropped, "row_variance"), stats.get("threshold")
    )
    alt = "Histogram of row variance, kept and dropped records stacked, with the threshold as a line."
    share = f" (the top {stats['keep']:.0%})" if "keep" in stats else ""
    caption = (
        f"Row variance of each record's PCA coordinates; records at or above the threshold{share} are kept. "
        "Row variance rewards outliers as much as diversity: read the kept examples below for odd or broken "
        "records."
    )
    plots.append(figures.as_plot("row_variance", figure, alt=alt, caption=caption))
    examples = figures.examples_html(
        ("Kept: highest row variance", "kept", figures.top(kept, "row_variance", highest=True)),
        ("Dropped: lowest row variance", "dropped", figures.top(dropped, "row_variance", highest=False)),
        facts=lambda r: [("row variance", f"{r.meta['row_variance']:.4g}")],
    )
    return "\n".join(["<h2>Variety compression</h2>", *map(figures.figure_html, plots), examples]), plots


def _pca_figure(cumulative: list[float], target: float, chosen: int) -> Figure:
    figure, (ax,) = figures.new_figure(8, 3.2)
    components = np.arange(1, len(cumulative) + 1)
    ax.plot(components, cumulative, color=figures.BLUE)
    ax.axhline(target, color=figures.GREY, linestyle=":", label=f"target {target:.0%}")
    ax.axvline(chosen, color=figures.MARK, linestyle="--", label=f"chosen: {chosen} components")
    ax.plot([chosen], [cumulative[chosen - 1]], "o", color=figures.MARK)
    ax.set(
        xlabel="number of components",
        ylabel="cumulative explained variance",
        ylim=(0, 1.02),
        xlim=(0, len(cumulative) + 1),
    )
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="lower right", frameon=False)
    return figure


def _row_variance_figure(kept: list[float], dropped: list[float], threshold: float | None) -> Figure:
    figure, (ax,) = figures.new_figure(8, 3.2, histogram=True)
    figures.selection_histogram(ax, kept, dropped, 40, "dropped", threshold, "threshold {:.4g}")
    ax.set(xlabel="row variance", ylabel="records")
    ax.legend(frameon=False)
    return figure
