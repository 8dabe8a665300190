"""The visual report of a run folder: `report.html`, one self-contained file, plus its figures as PNGs.

It shows how many records each phase kept and makes LIFT's known weaknesses visible (LIFT.md): a judge that
gives near-uniform scores, judge replies that could not be parsed, and what variety compression dropped.
The figures are written to `figures/` and the same PNG bytes are embedded as data URIs, so the HTML file
can be mailed on its own.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import string
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .quality import DIMENSIONS
from .records import InputError, Record, atomic_path, read_records

REPORT = "report.html"
FIGURES = "figures"
FIGURE_NAMES = ("funnel", "pca_variance", "row_variance", "judge_dimensions", "scores")  # figures/NAME.png
MANIFEST = "manifest.json"
EXAMPLES = 3  # kept and dropped examples shown per selection
CLIP = {"instruction": 400, "input": 300, "output": 700, "judge reply": 500}  # characters shown per field

# Okabe-Ito, distinguishable with every common colour-vision deficiency.
BLUE, ORANGE, VERMILLION, GREY = "#0072B2", "#E69F00", "#D55E00", "#777777"
KEPT, DROPPED, MARK = BLUE, ORANGE, VERMILLION
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclasses.dataclass(frozen=True)
class Plot:
    """One figure of the report: its PNG, the file name it is saved under, and what to look for in it."""

    name: str
    alt: str
    caption: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def write_report(run_dir: Path | str) -> Path:
    """Write `report.html` and `figures/*.png` into a run folder from its manifest and record files.

    Phases that were skipped or never ran are named as such; their figures are left out.
    Raises `InputError` when the manifest or a record file it names is missing or malformed.
    """
    run = RunFolder(Path(run_dir))
    with rc_context(STYLE):
        sections = [_overview(run), _funnel_section(run), _variety_section(run), _quality_section(run)]
    body = "\n".join(text for text, _ in sections)
    plots = [plot for _, section_plots in sections for plot in section_plots]
    figures_dir = run.path / FIGURES
    for plot in plots:
        with atomic_path(figures_dir / f"{plot.name}.png") as tmp:
            tmp.write_bytes(plot.png)
    for stale in set(FIGURE_NAMES) - {plot.name for plot in plots}:  # from an earlier report of this folder
        (figures_dir / f"{stale}.png").unlink(missing_ok=True)
    page = _PAGE.substitute(
        title=_e(run.title), body=body, figures=len(plots), kept=KEPT, dropped=DROPPED, mark=MARK
    )
    with atomic_path(run.path / REPORT) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return run.path / REPORT


class RunFolder:
    """The manifest of a run folder and the record files it names, read on demand."""

    def __init__(self, path: Path):
        self.path = path
        manifest_path = path / MANIFEST
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(
                manifest_path, None, "no such file; is this a folder written by `lift-local run`?"
            ) from None
        except json.JSONDecodeError as err:
            raise InputError(
                manifest_path, f"line {err.lineno} column {err.colno}", f"malformed JSON: {err.msg}"
            ) from None
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("phases"), dict):
            raise InputError(manifest_path, None, "not a lift-local manifest: no 'phases' object")
        self.phases: dict[str, dict[str, Any]] = self.manifest["phases"]
        self._read: dict[Path, list[Record]] = {}

    @property
    def title(self) -> str:
        return f"lift-local report: {self.path.resolve().name}"

    def done(self, phase: str) -> dict[str, Any] | None:
        entry = self.phases.get(phase)
        return entry if entry and entry.get("status") == "done" else None

    def status(self, phase: str) -> str:
        return self.phases.get(phase, {}).get("status", "not run")

    def records(self, phase: str, key: str = "output") -> list[Record]:
        """The records of the file a finished phase names under `key`; an empty file holds no records."""
        name = self.phases[phase].get(key)
        if not isinstance(name, str):
            raise InputError(self.path / MANIFEST, f"phases.{phase}", f"names no '{key}' file")
        path = self.path / name
        if path not in self._read:
            empty = path.is_file() and path.stat().st_size == 0
            self._read[path] = [] if empty else read_records(path)
        return self._read[path]


# --- sections: each returns (HTML, plots) ---


def _overview(run: RunFolder) -> tuple[str, list[Plot]]:
    manifest = run.manifest
    source = manifest.get("input", {})
    sample = f", a sample with seed {source.get('seed')}" if source.get("limit") else ""
    facts = [
        ("Input", f"{source.get('path', '?')} ({source.get('records', '?')} records{sample})"),
        ("Input SHA-256", str(source.get("sha256", "?"))),
        ("Curated output", str(manifest.get("curated", "not written (the run did not finish)"))),
        ("lift-local", str(manifest.get("lift_local_version", "?"))),
    ]
    facts += [(f"Model: {role}", _compact(model)) for role, model in manifest.get("models", {}).items()]
    rows = "".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in facts)
    warnings = "".join(f'<p class="warning">{text}</p>' for text in _warnings(run))
    return (
        f'<h1>{_e(run.title)}</h1>\n{warnings}\n<table class="facts">{rows}</table>\n{_phase_table(run)}',
        [],
    )


def _phase_table(run: RunFolder) -> str:
    rows = []
    for phase, entry in run.phases.items():
        done = entry.get("status") == "done"
        cells = [
            f"<th>{_e(phase)}</th>",
            f'<td class="{"" if done else "muted"}">{_e(entry.get("status", "?"))}</td>',
            f'<td class="num">{_e(entry.get("records_in", ""))}</td>',
            f'<td class="num">{_e(entry.get("records_out", ""))}</td>',
            f'<td class="num">{_e(_duration(entry["seconds"]) if "seconds" in entry else "")}</td>',
            f"<td><code>{_e(_compact(entry.get('params', {})))}</code></td>",
            f"<td>{_e(_phase_notes(phase, entry.get('stats', {})))}</td>",
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = (
        "".join(f"<th>{name}</th>" for name in ("Phase", "Status"))
        + "".join(f'<th class="num">{name}</th>' for name in ("In", "Out", "Time"))
        + "<th>Parameters</th><th>Notes</th>"
    )
    return f'<h2>Phases</h2>\n<table class="phases"><tr>{head}</tr>{"".join(rows)}</table>'


def _phase_notes(phase: str, stats: dict[str, Any]) -> str:
    """One line of the stats that have no figure of their own."""
    if phase == "enhance" and stats.get("unchanged"):
        return "original answer kept: " + _compact(stats["unchanged"])
    if phase == "expand" and stats.get("rounds"):
        return "; ".join(
            f"round {r.get('round')}: {r.get('new')} new, unusable: {_compact(r.get('unusable')) or 'none'}"
            for r in stats["rounds"]
        )
    if phase == "variety" and "n_components" in stats:
        return (
            f"{stats['n_components']} components reach {stats.get('variance_target', 0):.0%} of the "
            f"variance; row-variance threshold {stats.get('threshold', float('nan')):.4g}"
        )
    if phase == "quality" and "ok" in stats:
        failed = stats.get("failed", {})
        return (
            f"judged {stats['ok']}, failed {sum(failed.values())}"
            + (f" ({_compact(failed)})" if failed else "")
            + f"; length T = {_compact(stats.get('length_T', '?'))} characters"
        )
    return ""


def _warnings(run: RunFolder) -> list[str]:
    """HTML-safe warnings about LIFT's known weaknesses, shown at the top of the report."""
    quality = run.done("quality")
    if quality is None:
        return []
    stats = quality.get("stats", {})
    # The phase words its own warnings, a near-uniform judge among them; older manifests have only the flag.
    uniform = ["the judge's totals are nearly uniform"] if stats.get("uniform_warning") else []
    texts = stats.get("warnings", uniform)
    found = []
    if texts:
        found.append(f"<b>Quality compression:</b> {'; '.join(map(_e, texts))}.")
        if stats.get("uniform_warning") and quality.get("baseline"):
            found[-1] += (
                " Compare the curated set with the random subset of the same size in "
                f"<code>{_e(quality['baseline'])}</code>."
            )
    failed = stats.get("failed", {})
    if sum(failed.values()):
        found.append(
            f"<b>The judge's reply could not be used for {sum(failed.values())} of "
            f"{stats.get('ok', 0) + sum(failed.values())} records</b> ({_e(_compact(failed))}). They have no "
            f"score; the first of their raw replies are shown under Quality compression."
        )
    return found


def _funnel_section(run: RunFolder) -> tuple[str, list[Plot]]:
    stages: list[tuple[str, int | None]] = [("input", run.manifest.get("input", {}).get("records"))]
    stages += [
        (phase, entry.get("records_out") if run.done(phase) else None) for phase, entry in run.phases.items()
    ]
    skipped = [phase for phase in run.phases if not run.done(phase)]
    caption = (
        "Records after each phase. Expansion should multiply the input; variety and quality compression each "
        "keep the fraction their parameters ask for."
    )
    if skipped:
        caption += f" Skipped or not finished: {', '.join(skipped)}."
    alt = "Horizontal bars: number of records after each phase, from the input down to the curated set."
    plot = _plot("funnel", _funnel_figure(stages), alt=alt, caption=caption)
    return f"<h2>Records through the phases</h2>\n{_figure_html(plot)}", [plot]


def _variety_section(run: RunFolder) -> tuple[str, list[Plot]]:
    entry = run.done("variety")
    if entry is None:
        return _nothing_to_show(run, "variety", "Variety compression"), []
    stats = entry.get("stats", {})
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
        plots.append(_plot("pca_variance", figure, alt=alt, caption=caption))
    figure = _row_variance_figure(
        _meta_values(kept, "row_variance"), _meta_values(dropped, "row_variance"), stats.get("threshold")
    )
    alt = "Histogram of row variance, kept and dropped records stacked, with the threshold as a line."
    share = f" (the top {stats['keep']:.0%})" if "keep" in stats else ""
    caption = (
        f"Row variance of each record's PCA coordinates; records at or above the threshold{share} are kept. "
        "Row variance rewards outliers as much as diversity: read the kept examples below for odd or broken "
        "records."
    )
    plots.append(_plot("row_variance", figure, alt=alt, caption=caption))
    examples = _examples_html(
        ("Kept: highest row variance", "kept", _top(kept, "row_variance", highest=True)),
        ("Dropped: lowest row variance", "dropped", _top(dropped, "row_variance", highest=False)),
        facts=lambda r: [("row variance", f"{r.meta['row_variance']:.4g}")],
    )
    return "\n".join(["<h2>Variety compression</h2>", *map(_figure_html, plots), examples]), plots


def _quality_section(run: RunFolder) -> tuple[str, list[Plot]]:
    entry = run.done("quality")
    if entry is None:
        return _nothing_to_show(run, "quality", "Quality compression"), []
    scored = run.records("quality", "scored")
    kept_ids = {record.id for record in run.records("quality")}
    judged = [r for r in scored if _judged(r)]
    failed = [r for r in scored if not _judged(r)]
    plots = []
    if judged:
        figure = _dimensions_figure(
            {dim: [r.meta["judge"]["scores"][dim] for r in judged] for dim in DIMENSIONS}
        )
        alt = "Four histograms of the judge's scores on clarity, difficulty, explanation and accuracy."
        caption = (
            "The judge's score on each dimension, over its full range. A judge that gives everyone the same "
            "score makes quality selection no better than random; look for spread."
        )
        plots.append(_plot("judge_dimensions", figure, alt=alt, caption=caption))

        kept_quality = [r.meta["quality"] for r in judged if r.id in kept_ids]
        rest_quality = [r.meta["quality"] for r in judged if r.id not in kept_ids]
        cutoff = min(kept_quality) if kept_quality else None
        totals = [r.meta["judge"]["total"] for r in judged]
        figure = _scores_figure(
            totals, _meta_values(scored, "length_score"), kept_quality, rest_quality, cutoff
        )
        alt = "Histograms of judge total, length score and final quality, with the kept records' cut-off."
        params = entry.get("params", {})
        weights = (
            f"{params.get('judge_weight', 0.9):g} × judge + {params.get('length_weight', 0.1):g} × length"
        )
        caption = (
            f"Judge total, length score and final quality = {weights}. "
            f"The top {len(kept_ids)} by final quality are kept"
            + (f": every kept record scores at least {cutoff:.1f}." if cutoff is not None else ".")
            + " When the judge's totals bunch together, the length score decides most of the selection."
        )
        plots.append(_plot("scores", figure, alt=alt, caption=caption))
    ranked = sorted(judged, key=lambda r: r.meta["quality"], reverse=True)
    examples = _examples_html(
        ("Kept: highest quality", "kept", ranked[:EXAMPLES]),
        ("Not kept: lowest quality", "dropped", ranked[::-1][:EXAMPLES]),
        facts=_quality_facts,
    )
    parts = ["<h2>Quality compression</h2>", *map(_figure_html, plots), examples]
    if entry.get("baseline"):
        parts.append(
            f"<p>A random subset of the same size, to compare with: <code>{_e(entry['baseline'])}</code>.</p>"
        )
    if failed:
        counts = Counter(r.meta.get("judge", {}).get("status", "unknown") for r in failed)
        parts.append(f"<h3>Judge failures ({len(failed)}: {_e(_compact(dict(counts)))})</h3>")
        parts.append("<p>The judge's replies that gave no score, first of them:</p>")
        parts.append(
            f'<div class="examples">{_cards_html(failed[:EXAMPLES], "dropped", _failure_facts)}</div>'
        )
    return "\n".join(parts), plots


def _nothing_to_show(run: RunFolder, phase: str, title: str) -> str:
    return f'<h2>{title}</h2>\n<p class="muted">{title} {_e(run.status(phase))}: nothing to show.</p>'


# --- figures ---


def _plot(name: str, figure: Figure, *, alt: str, caption: str) -> Plot:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return Plot(name=name, alt=alt, caption=caption, png=buffer.getvalue())


def _figure(width: float, height: float, ncols: int = 1, *, histogram: bool = False):
    """A figure outside pyplot, so that nothing depends on a global backend or figure state."""
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    if histogram:
        for ax in axes:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of records
    return figure, axes


def _funnel_figure(stages: list[tuple[str, int | None]]) -> Figure:
    figure, (ax,) = _figure(8, 0.45 * len(stages) + 0.8)
    labels = [name for name, _ in stages]
    counts = [count or 0 for _, count in stages]
    ax.barh(labels, counts, color=BLUE)
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.set_xlim(0, max(counts + [1]) * 1.3)
    previous = None
    for y, (_, count) in enumerate(stages):
        if count is None:
            ax.text(0, y, "  skipped", va="center", color=GREY, style="italic")
            continue
        share = f"  ({count / previous:.0%} of {previous})" if previous else ""
        ax.text(count, y, f" {count}{share}", va="center")
        previous = count
    return figure


def _pca_figure(cumulative: list[float], target: float, chosen: int) -> Figure:
    figure, (ax,) = _figure(8, 3.2)
    components = np.arange(1, len(cumulative) + 1)
    ax.plot(components, cumulative, color=BLUE)
    ax.axhline(target, color=GREY, linestyle=":", label=f"target {target:.0%}")
    ax.axvline(chosen, color=MARK, linestyle="--", label=f"chosen: {chosen} components")
    ax.plot([chosen], [cumulative[chosen - 1]], "o", color=MARK)
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
    figure, (ax,) = _figure(8, 3.2, histogram=True)
    _selection_histogram(ax, kept, dropped, 40, "dropped", threshold, "threshold {:.4g}")
    ax.set(xlabel="row variance", ylabel="records")
    ax.legend(frameon=False)
    return figure


def _selection_histogram(ax, kept, dropped, bins, dropped_name: str, cut: float | None, cut_label: str) -> None:
    """What a selection did: kept and dropped values stacked, and the line between them."""
    labels = [f"{dropped_name} ({len(dropped)})", f"kept ({len(kept)})"]
    ax.hist([dropped, kept], bins=bins, stacked=True, color=[DROPPED, KEPT], label=labels)
    if cut is not None:
        ax.axvline(cut, color=MARK, linestyle="--", label=cut_label.format(cut))


def _dimensions_figure(scores: dict[str, list[int]]) -> Figure:
    figure, axes = _figure(10, 2.6, ncols=len(scores), histogram=True)
    for ax, (dim, values) in zip(axes, scores.items(), strict=True):
        top = DIMENSIONS[dim]
        ax.hist(values, bins=np.arange(-0.5, top + 1.5), color=BLUE)
        ax.set_xlim(-0.5, top + 0.5)
        ax.set_xticks(np.linspace(0, top, 6))  # up to the maximum: a judge avoiding full marks leaves a gap
        ax.xaxis.set_major_formatter("{x:g}")
        ax.set_title(f"{dim} (0–{top})")
        ax.set_xlabel(f"mean {np.mean(values):.1f}, sd {np.std(values):.1f}")
    axes[0].set_ylabel("records")
    return figure


def _scores_figure(
    totals: list[int], lengths: list[float], kept: list[float], rest: list[float], cutoff: float | None
) -> Figure:
    figure, (total_ax, length_ax, final_ax) = _figure(10, 2.8, ncols=3, histogram=True)
    bins = np.linspace(0, 100, 41)
    total_ax.hist(totals, bins=bins, color=BLUE)
    total_ax.set(title="judge total", xlabel="score", ylabel="records")
    length_ax.hist(lengths, bins=bins, color=BLUE)
    length_ax.set(title="length score", xlabel="score")
    _selection_histogram(final_ax, kept, rest, bins, "not kept", cutoff, "cut-off {:.1f}")
    final_ax.set(title="final quality", xlabel="score")
    final_ax.legend(frameon=False, loc="upper left")
    for ax in (total_ax, length_ax, final_ax):
        ax.set_xlim(0, 100)
    return figure


# --- HTML pieces ---


def _figure_html(plot: Plot) -> str:
    return (
        f'<figure><img src="{plot.data_uri}" alt="{_e(plot.alt)}">'
        f'<figcaption>{_e(plot.caption)} <span class="muted">({FIGURES}/{plot.name}.png)</span></figcaption>'
        "</figure>"
    )


def _examples_html(*columns: tuple[str, str, list[Record]], facts) -> str:
    """Columns of record cards side by side; `facts(record)` gives the (label, value) pairs atop a card."""
    none = '<p class="muted">none</p>'
    html_columns = [
        f"<div><h4>{_e(title)}</h4>{_cards_html(records, kind, facts) or none}</div>"
        for title, kind, records in columns
    ]
    return f'<div class="examples">{"".join(html_columns)}</div>'


def _cards_html(records: list[Record], kind: str, facts) -> str:
    return "".join(_card(record, kind, facts(record)) for record in records)


def _card(record: Record, kind: str, facts: list[tuple[str, str]]) -> str:
    origin = record.meta.get("origin", "")
    if record.meta.get("round"):
        origin += f", round {record.meta['round']}"
    header = " · ".join(f"{_e(label)} <b>{_e(value)}</b>" for label, value in facts)
    fields = [("instruction", record.instruction), ("input", record.input), ("output", record.output)]
    if "judge" in record.meta and not _judged(record):
        fields.insert(0, ("judge reply", record.meta["judge"].get("raw", "")))
    body = "".join(
        f'<div class="field">{name}</div><pre>{_e(_clip(text, CLIP[name]))}</pre>'
        for name, text in fields
        if text
    )
    return (
        f'<div class="card {kind}"><div class="meta">{header}<br><span class="muted">id {_e(record.id)}'
        f"{' · ' + _e(origin) if origin else ''}</span></div>{body}</div>"
    )


def _quality_facts(record: Record) -> list[tuple[str, str]]:
    judge = record.meta["judge"]
    dims = ", ".join(f"{dim[:4]} {judge['scores'][dim]}" for dim in DIMENSIONS)
    return [
        ("quality", f"{record.meta['quality']:.1f}"),
        ("judge", f"{judge['total']} ({dims})"),
        ("length", f"{record.meta.get('length_score', 0):.0f}"),
    ]


def _failure_facts(record: Record) -> list[tuple[str, str]]:
    judge = record.meta.get("judge", {})
    return [("status", str(judge.get("status", "unknown"))), ("retries", str(judge.get("retries", "?")))]


# --- small helpers ---


def _judged(record: Record) -> bool:
    return record.meta.get("judge", {}).get("status") == "ok" and "quality" in record.meta


def _meta_values(records: list[Record], key: str) -> list[float]:
    return [r.meta[key] for r in records if key in r.meta]


def _top(records: list[Record], key: str, *, highest: bool) -> list[Record]:
    ranked = sorted((r for r in records if key in r.meta), key=lambda r: r.meta[key], reverse=highest)
    return ranked[:EXAMPLES]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def _compact(value: Any) -> str:
    """A dict as `key=value, ...` on one line, floats to four significant digits, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key}={_compact(item)}" for key, item in value.items())
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if minutes == 0 else f"{minutes} min {rest:02d} s"


def _e(value: Any) -> str:
    return html.escape(str(value))


_PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1080px; margin: 2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.5rem; margin-bottom: .8rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.4rem; }
h3 { font-size: 1.05rem; margin-top: 1.6rem; }
h4 { margin: .4rem 0; font-size: .95rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .6rem 0; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
table.facts th { color: #555; font-weight: 600; white-space: nowrap; }
table.facts td { word-break: break-all; }
table.phases code { font-size: .8rem; word-break: break-word; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #444; font-size: .88rem; margin-top: .3rem; }
.muted { color: #777; }
.warning { background: #fdf1e6; border-left: 4px solid $mark; padding: .6rem .9rem; margin: .6rem 0; }
.examples { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 1.2rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem .8rem; margin-bottom: .8rem;
        font-size: .85rem; }
.card.kept { border-top: 4px solid $kept; }
.card.dropped { border-top: 4px solid $dropped; }
.card .meta { margin-bottom: .3rem; }
.card .field { color: #777; font-size: .75rem; text-transform: uppercase; letter-spacing: .04em;
               margin-top: .3rem; }
.card pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .35rem .5rem;
            margin: .1rem 0; font-size: .8rem; max-height: 14em; overflow: auto; }
</style>
</head>
<body data-figures="$figures">
$body
<script>
// Lets a headless browser check that every figure decoded: data-figures-loaded = images with pixels.
addEventListener("load", () => {
  const loaded = [...document.images].filter((image) => image.complete && image.naturalWidth > 0);
  document.body.dataset.figuresLoaded = loaded.length;
});
</script>
</body>
</html>
""")
