"""The visual report of a run folder: `report.html`, one self-contained file, plus its figures as PNGs.

It shows how many records each phase kept and makes LIFT's known weaknesses visible (LIFT.md): a judge that
gives near-uniform scores, judge replies that could not be parsed, and what variety compression dropped.
Each phase draws its own section (`Phase.report`) with the toolkit in `figures.py`; this module puts the
sections on one page. The figures are written to `figures/` and the same PNG bytes are embedded as data
URIs, so the HTML file can be mailed on its own.
"""

from __future__ import annotations

from pathlib import Path

from . import figures
from .ab.results import report_section
from .figures import BLUE, GREY, Plot, compact, duration, e, figure_html
from .manifest import RunFolder
from .phases import Phase, all_phases
from .records import atomic_path

REPORT = "report.html"
FIGURES = "figures"


def write_report(run_dir: Path | str) -> Path:
    """Write `report.html` and `figures/*.png` into a run folder from its manifest and record files.

    Phases that were skipped or never ran are named as such; their figures are left out.
    Raises `InputError` when the manifest or a record file it names is missing or malformed.
    """
    run = RunFolder(Path(run_dir))
    with figures.style():
        sections = [_overview(run), _funnel_section(run)]
        sections += [_phase_section(run, cls) for cls in all_phases()]
        sections.append(report_section(run.manifest.ab, str(run.path)))
    body = "\n".join(text for text, _ in sections)
    plots = [plot for _, section_plots in sections for plot in section_plots]
    figures_dir = run.path / FIGURES
    for plot in plots:
        with atomic_path(figures_dir / f"{plot.name}.png") as tmp:
            tmp.write_bytes(plot.png)
    for stale in set(figures_dir.glob("*.png")) - {figures_dir / f"{plot.name}.png" for plot in plots}:
        stale.unlink()  # from an earlier report of this folder
    with atomic_path(run.path / REPORT) as tmp:
        tmp.write_text(figures.page(run.title, body, len(plots)), encoding="utf-8")
    return run.path / REPORT


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
    plot = figures.as_plot("funnel", _funnel_figure(stages), alt=alt, caption=caption)
    return f"<h2>Records through the phases</h2>\n{figure_html(plot)}", [plot]


def _funnel_figure(stages: list[tuple[str, int | None]]):
    figure, (ax,) = figures.new_figure(8, 0.45 * len(stages) + 0.8)
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
