"""The figure and HTML toolkit of lift-local's reports: figures outside pyplot, PNGs as data URIs, record
cards, and the page they go on.

It imports nothing of lift-local, so that anything (the report's page builder, a phase's section, `ab`,
`judge-eval`) can draw with it without importing the rest. A record card needs only what every record has:
`id`, `instruction`, `input`, `output` and `origin` (a line saying where the record came from).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import string
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

EXAMPLES = 3  # kept and dropped examples shown per selection
CLIP = {"instruction": 400, "input": 300, "output": 700}  # characters shown per field; others 500

# Okabe-Ito, distinguishable with every common colour-vision deficiency.
BLUE, ORANGE, VERMILLION, GREY = "#0072B2", "#E69F00", "#D55E00", "#777777"
KEPT, DROPPED, MARK = BLUE, ORANGE, VERMILLION
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


class Card(Protocol):
    """What a record card shows of a record."""

    id: str
    instruction: str
    input: str
    output: str

    @property
    def origin(self) -> str: ...


Facts = Callable[[Any], list[tuple[str, str]]]  # (label, value) pairs atop a card


@dataclasses.dataclass(frozen=True)
class Plot:
    """One figure of a report: its PNG, the file name it is saved under, and what to look for in it."""

    name: str
    alt: str
    caption: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


# --- figures ---


def style():
    """The reports' matplotlib style, for a `with` block around the figures drawn."""
    return rc_context(STYLE)


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


def selection_histogram(ax, kept, dropped, bins, dropped_name: str, cut: float | None, cut_label: str) -> None:
    """What a selection did: kept and dropped values stacked, and the line between them."""
    labels = [f"{dropped_name} ({len(dropped)})", f"kept ({len(kept)})"]
    ax.hist([dropped, kept], bins=bins, stacked=True, color=[DROPPED, KEPT], label=labels)
    if cut is not None:
        ax.axvline(cut, color=MARK, linestyle="--", label=cut_label.format(cut))


def interval_bars(ax, labels: list[str], values: list[float], lows: list[float], highs: list[float],
                  colours: list[str]) -> None:
    """Horizontal bars with their confidence intervals as error bars, the first label on top."""
    y = list(range(len(labels)))
    errors = [[v - lo for v, lo in zip(values, lows)], [hi - v for v, hi in zip(values, highs)]]
    ax.barh(y, values, color=colours)
    ax.errorbar(values, y, xerr=errors, fmt="none", ecolor="black", elinewidth=1, capsize=3)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()


# --- HTML pieces ---


def figure_html(plot: Plot, folder: str = "figures") -> str:
    return (
        f'<figure><img src="{plot.data_uri}" alt="{e(plot.alt)}">'
        f'<figcaption>{e(plot.caption)} <span class="muted">({folder}/{plot.name}.png)</span></figcaption>'
        "</figure>"
    )


def examples_html(*columns: tuple[str, str, list[Card]], facts: Facts) -> str:
    """Columns of record cards side by side; `facts(record)` gives the (label, value) pairs atop a card."""
    none = '<p class="muted">none</p>'
    html_columns = [
        f"<div><h4>{e(title)}</h4>{cards_html(records, kind, facts) or none}</div>"
        for title, kind, records in columns
    ]
    return f'<div class="examples">{"".join(html_columns)}</div>'


def cards_html(records: Iterable[Card], kind: str, facts: Facts, lead: Facts | None = None) -> str:
    """Cards of records; `lead(record)` gives (name, text) fields shown before the record's own."""
    return "".join(_card(record, kind, facts(record), lead(record) if lead else []) for record in records)


def _card(record: Card, kind: str, facts: list[tuple[str, str]], lead: list[tuple[str, str]]) -> str:
    header = " · ".join(f"{e(label)} <b>{e(value)}</b>" for label, value in facts)
    fields = [*lead, ("instruction", record.instruction), ("input", record.input), ("output", record.output)]
    body = "".join(
        f'<div class="field">{name}</div><pre>{e(_clip(text, CLIP.get(name, 500)))}</pre>'
        for name, text in fields
        if text
    )
    origin = record.origin
    return (
        f'<div class="card {kind}"><div class="meta">{header}<br><span class="muted">id {e(record.id)}'
        f"{' · ' + e(origin) if origin else ''}</span></div>{body}</div>"
    )


def page(title: str, body: str, figures: int) -> str:
    """The self-contained HTML page around a report's body."""
    return _PAGE.substitute(title=e(title), body=body, figures=figures, kept=KEPT, dropped=DROPPED, mark=MARK)


# --- small helpers ---


def meta_values(records: Iterable[Any], key: str) -> list[float]:
    return [r.meta[key] for r in records if key in r.meta]


def top(records: Iterable[Any], key: str, *, highest: bool) -> list[Any]:
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
