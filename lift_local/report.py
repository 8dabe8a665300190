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
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .errors import InputError
from .manifest import MANIFEST, Manifest, PhaseEntry
from .phases import Phase, all_phases
from .records import Record, atomic_path, read_records

REPORT = "report.html"
FIGURES = "figures"
EXAMPLES = 3  # kept and dropped examples shown per selection
CLIP = {"instruction": 400, "input": 300, "output": 700}  # characters shown per field; others 500
Facts = Callable[[Record], list[tuple[str, str]]]  # (label, value) pairs of a record card

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
        sections = [_overview(run), _funnel_section(run)]
        sections += [_phase_section(run, cls) for cls in all_phases()]
        sections.append(_ab_section(run))
    body = "\n".join(text for text, _ in sections)
    plots = [plot for _, section_plots in sections for plot in section_plots]
    figures_dir = run.path / FIGURES
    for plot in plots:
        with atomic_path(figures_dir / f"{plot.name}.png") as tmp:
            tmp.write_bytes(plot.png)
    for stale in set(figures_dir.glob("*.png")) - {figures_dir / f"{plot.name}.png" for plot in plots}:
        stale.unlink()  # from an earlier report of this folder
    page = _PAGE.substitute(
        title=e(run.title), body=body, figures=len(plots), kept=KEPT, dropped=DROPPED, mark=MARK
    )
    with atomic_path(run.path / REPORT) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return run.path / REPORT


class RunFolder:
    """The manifest of a run folder and the record files it names, read on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = Manifest.load(path)
        self.phases = self.manifest.phases
        self._read: dict[Path, list[Record]] = {}

    @property
    def title(self) -> str:
        return f"lift-local report: {self.path.resolve().name}"

    def done(self, phase: str) -> PhaseEntry | None:
        entry = self.phases.get(phase)
        return entry if entry and entry.done else None

    def status(self, phase: str) -> str:
        entry = self.phases.get(phase)
        return entry.status if entry else "not run"

    def records(self, phase: str, side: str | None = None) -> list[Record]:
        """The records of a finished phase's output, or of its side file `side`; an empty file holds none."""
        entry = self.phases[phase]
        name = entry.output if side is None else entry.side.get(side)
        if not isinstance(name, str):
            raise InputError(self.path / MANIFEST, f"phases.{phase}", f"names no '{side or 'output'}' file")
        path = self.path / name
        if path not in self._read:
            empty = path.is_file() and path.stat().st_size == 0
            self._read[path] = [] if empty else read_records(path)
        return self._read[path]


# --- sections: each returns (HTML, plots) ---


def _overview(run: RunFolder) -> tuple[str, list[Plot]]:
    manifest = run.manifest
    source = manifest.input
    sample = f", a sample with seed {source.get('seed')}" if source.get("limit") else ""
    facts = [
        ("Input", f"{source.get('path', '?')} ({source.get('records', '?')} records{sample})"),
        ("Input SHA-256", str(source.get("sha256", "?"))),
        ("Curated output", manifest.curated or "not written (the run did not finish)"),
        ("lift-local", manifest.lift_local_version or "?"),
    ]
    facts += [(f"Model: {role}", compact(model)) for role, model in manifest.models.items()]
    rows = "".join(f"<tr><th>{e(name)}</th><td>{e(value)}</td></tr>" for name, value in facts)
    warnings = "".join(f'<p class="warning">{text}</p>' for text in _warnings(run))
    return (
        f'<h1>{e(run.title)}</h1>\n{warnings}\n<table class="facts">{rows}</table>\n{_phase_table(run)}',
        [],
    )


def _phase_table(run: RunFolder) -> str:
    rows = []
    classes = {cls.name: cls for cls in all_phases()}
    for phase, entry in run.phases.items():
        notes = classes[phase].notes(entry.stats) if entry.done and phase in classes else ""
        cells = [
            f"<th>{e(phase)}</th>",
            f'<td class="{"" if entry.done else "muted"}">{e(entry.status)}</td>',
            f'<td class="num">{e(compact(entry.records_in))}</td>',
            f'<td class="num">{e(compact(entry.records_out))}</td>',
            f'<td class="num">{e(duration(entry.seconds) if entry.seconds is not None else "")}</td>',
            f"<td><code>{e(compact(entry.params))}</code></td>",
            f"<td>{e(notes)}</td>",
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = (
        "".join(f"<th>{name}</th>" for name in ("Phase", "Status"))
        + "".join(f'<th class="num">{name}</th>' for name in ("In", "Out", "Time"))
        + "<th>Parameters</th><th>Notes</th>"
    )
    return f'<h2>Phases</h2>\n<table class="phases"><tr>{head}</tr>{"".join(rows)}</table>'


def _warnings(run: RunFolder) -> list[str]:
    """HTML warnings of the finished phases, shown at the top of the report."""
    return [w for cls in all_phases() if run.done(cls.name) for w in cls.warnings(run.done(cls.name))]


def _phase_section(run: RunFolder, cls: type[Phase]) -> tuple[str, list[Plot]]:
    """A phase's own section where it finished; where it did not, a line that says so."""
    if run.done(cls.name):
        return cls.report(run) or ("", [])
    if cls.report is Phase.report:
        return "", []
    return f'<h2>{cls.title}</h2>\n<p class="muted">{cls.title} {e(run.status(cls.name))}: nothing to show.</p>', []


def _ab_section(run: RunFolder) -> tuple[str, list[Plot]]:
    from .ab.results import report_section  # which imports this module's figure toolkit

    return report_section(run.manifest.ab, str(run.path))


def _funnel_section(run: RunFolder) -> tuple[str, list[Plot]]:
    stages: list[tuple[str, int | None]] = [("input", run.manifest.input.get("records"))]
    stages += [(phase, entry.records_out if entry.done else None) for phase, entry in run.phases.items()]
    skipped = [phase for phase in run.phases if not run.done(phase)]
    caption = (
        "Records after each phase. Expansion should multiply the input; variety and quality compression each "
        "keep the fraction their parameters ask for."
    )
    if skipped:
        caption += f" Skipped or not finished: {', '.join(skipped)}."
    alt = "Horizontal bars: number of records after each phase, from the input down to the curated set."
    plot = as_plot("funnel", _funnel_figure(stages), alt=alt, caption=caption)
    return f"<h2>Records through the phases</h2>\n{figure_html(plot)}", [plot]


# --- figures ---


def as_plot(name: str, figure: Figure, *, alt: str, caption: str) -> Plot:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return Plot(name=name, alt=alt, caption=caption, png=buffer.getvalue())


def new_figure(width: float, height: float, ncols: int = 1, *, histogram: bool = False):
    """A figure outside pyplot, so that nothing depends on a global backend or figure state."""
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    if histogram:
        for ax in axes:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of records
    return figure, axes


def _funnel_figure(stages: list[tuple[str, int | None]]) -> Figure:
    figure, (ax,) = new_figure(8, 0.45 * len(stages) + 0.8)
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


def selection_histogram(ax, kept, dropped, bins, dropped_name: str, cut: float | None, cut_label: str) -> None:
    """What a selection did: kept and dropped values stacked, and the line between them."""
    labels = [f"{dropped_name} ({len(dropped)})", f"kept ({len(kept)})"]
    ax.hist([dropped, kept], bins=bins, stacked=True, color=[DROPPED, KEPT], label=labels)
    if cut is not None:
        ax.axvline(cut, color=MARK, linestyle="--", label=cut_label.format(cut))


# --- HTML pieces ---


def figure_html(plot: Plot) -> str:
    return (
        f'<figure><img src="{plot.data_uri}" alt="{e(plot.alt)}">'
        f'<figcaption>{e(plot.caption)} <span class="muted">({FIGURES}/{plot.name}.png)</span></figcaption>'
        "</figure>"
    )


def examples_html(*columns: tuple[str, str, list[Record]], facts: Facts) -> str:
    """Columns of record cards side by side; `facts(record)` gives the (label, value) pairs atop a card."""
    none = '<p class="muted">none</p>'
    html_columns = [
        f"<div><h4>{e(title)}</h4>{cards_html(records, kind, facts) or none}</div>"
        for title, kind, records in columns
    ]
    return f'<div class="examples">{"".join(html_columns)}</div>'


def cards_html(records: list[Record], kind: str, facts: Facts, lead: Facts | None = None) -> str:
    """Cards of records; `lead(record)` gives (name, text) fields shown before the record's own."""
    return "".join(_card(record, kind, facts(record), lead(record) if lead else []) for record in records)


def _card(record: Record, kind: str, facts: list[tuple[str, str]], lead: list[tuple[str, str]]) -> str:
    origin = record.meta.get("origin", "")
    if record.meta.get("round"):
        origin += f", round {record.meta['round']}"
    header = " · ".join(f"{e(label)} <b>{e(value)}</b>" for label, value in facts)
    fields = [*lead, ("instruction", record.instruction), ("input", record.input), ("output", record.output)]
    body = "".join(
        f'<div class="field">{name}</div><pre>{e(_clip(text, CLIP.get(name, 500)))}</pre>'
        for name, text in fields
        if text
    )
    return (
        f'<div class="card {kind}"><div class="meta">{header}<br><span class="muted">id {e(record.id)}'
        f"{' · ' + e(origin) if origin else ''}</span></div>{body}</div>"
    )


# --- small helpers ---


def meta_values(records: list[Record], key: str) -> list[float]:
    return [r.meta[key] for r in records if key in r.meta]


def top(records: list[Record], key: str, *, highest: bool) -> list[Record]:
    ranked = sorted((r for r in records if key in r.meta), key=lambda r: r.meta[key], reverse=highest)
    return ranked[:EXAMPLES]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def compact(value: Any) -> str:
    """A dict as `key=value, ...` on one line, floats to four significant digits, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key}={compact(item)}" for key, item in value.items())
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if minutes == 0 else f"{minutes} min {rest:02d} s"


def e(value: Any) -> str:
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
