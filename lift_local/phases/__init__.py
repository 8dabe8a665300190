"""The shape every phase has, and the one list of phases that the pipeline, config, CLI and report read.

A phase is a `Phase` subclass in its own module of this package, declared once: its name, its parameter
dataclass, the model roles and prompt templates it uses, how it runs and what the report says about it.
Defining the class registers it; `all_phases()` imports every module here, so adding a phase is adding
one file.

Every phase is the composition of two steps, after datatrove's pipeline steps:

- `map`: per-record work on a batch of records (LLM calls, embeddings, hashes), a pure function of the
  batch and the models; it returns each record (possibly rewritten) with its compact *features*.
- `select`: a decision over the features alone (scores, embeddings, lengths, hashes), never the texts:
  which records are kept, which go to side files, what each learns, and the phase's statistics.

An executor runs `map`: `Local` in this process on the whole input as one batch (so an engine batches
continuously); a cluster executor can send batches to other machines while `select` stays on the driver,
and may hand back stand-ins for the mapped records that stay on the cluster (`ray_executor.StagedRecord`):
`run` passes records on, to the next `map` or to the `Outcome`, and gives them metadata (`with_meta`), but
reads no record's text.
A phase whose work has several rounds (expand) overrides `run` and calls map and select once a round.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..llm import Sampling
from ..params import Params, option
from ..records import Record

if TYPE_CHECKING:
    from ..embed import Embedder
    from ..figures import Plot
    from ..llm import ChatModel
    from ..manifest import PhaseEntry, RunFolder
    from ..prompts import Prompt


@dataclasses.dataclass(frozen=True)
class GenerationParams(Params):
    """The sampling settings of a phase that asks an LLM for text."""

    temperature: float = option(0.7, "Sampling temperature.", low=0, high=2)
    max_tokens: int = option(
        1024, "Longest reply in tokens; a reply cut off there is not used, and is counted.", low=1
    )
    seed: int = option(0, "Sampling seed: the same seed repeats the same requests.", low=0)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)


class Kit(Protocol):
    """What `map` works with: the models of the phase's roles and its prompt templates (the Workbench)."""

    def chat(self, role: str) -> ChatModel: ...

    def embedder(self) -> Embedder: ...

    def prompt(self, name: str, requires: tuple[str, ...]) -> Prompt: ...


@dataclasses.dataclass(frozen=True)
class Mapped:
    """One record after `map`, and the compact features `select` decides on."""

    record: Record
    features: Any


@dataclasses.dataclass
class Selection:
    """What `select` decided, by position in the mapped batch: `keep` in output order, side files (name ->
    positions), metadata each record gains from the decision, and JSON-ready statistics."""

    keep: list[int]
    side: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    meta: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Outcome:
    """A phase's result: the records the next phase reads, its side files and its statistics."""

    records: list[Record]
    side: dict[str, list[Record]] = dataclasses.field(default_factory=dict)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, records: Sequence[Record], selection: Selection) -> Outcome:
        def pick(positions: list[int]) -> list[Record]:
            return [records[i].with_meta(**selection.meta[i]) if i in selection.meta else records[i] for i in positions]

        side = {name: pick(positions) for name, positions in selection.side.items()}
        return cls(pick(selection.keep), side, selection.stats)


MapStep = Callable[[list[Record], Kit], list[Mapped]]


class Executor(Protocol):
    def hold(self, records: Iterable[Record]) -> list[Record]:
        """The records read from a file, as the executor keeps them between maps."""

    def map(self, step: MapStep, records: list[Record]) -> list[Mapped]: ...


@dataclasses.dataclass
class Local:
    """Runs `map` in this process, on all records at once."""

    kit: Kit

    def hold(self, records: Iterable[Record]) -> list[Record]:
        return list(records)

    def map(self, step: MapStep, records: list[Record]) -> list[Mapped]:
        return step(records, self.kit) if records else []


class Phase:
    """A LIFT phase (or one the field adds). A subclass declares itself in its class statement and
    implements `map` and `select`; its docstring is its command's help:

        class Enhance(Phase, name="enhance", title="Enhancement", params=EnhanceParams, order=20,
                      roles=("rewriter",), prompts={"prompt": "enhance"}):

    - `name`: the command, the config section and the run folder's file names
    - `title`: as the paper (or the field) names it, for the report
    - `params`: a frozen `Params` dataclass (see `params.option`); its fields are the config keys and the
      command's options
    - `order`: its place in `lift-local run`, ascending
    - `roles`: the models `map` uses: "rewriter", "judge", "embedder"
    - `prompts`: the prompt templates by command-line option ("prompt", "answer_prompt") -> template name,
      in which {field} is the parameter's value; each template's user message must use the fields in
      `requires`
    - `sides`: side files -> the help of the command's option that writes one

    An instance holds its parameters (an instance of `Params`), as a scikit-learn estimator does.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    Params: ClassVar[type]
    order: ClassVar[int]
    roles: ClassVar[tuple[str, ...]]
    prompts: ClassVar[dict[str, str]]
    requires: ClassVar[tuple[str, ...]]
    sides: ClassVar[dict[str, str]]

    _registry: ClassVar[dict[str, type[Phase]]] = {}

    def __init_subclass__(
        cls, *, name: str, title: str, params: type, order: int, roles: tuple[str, ...] = (),
        prompts: dict[str, str] | None = None, requires: tuple[str, ...] = ("instruction",),
        sides: dict[str, str] | None = None, **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.title, cls.Params, cls.order = name, title, params, order
        cls.roles, cls.prompts, cls.requires, cls.sides = roles, prompts or {}, requires, sides or {}
        Phase._registry[name] = cls

    def __init__(self, params: Any = None):
        self.params = self.Params() if params is None else params

    def templates(self) -> dict[str, str]:
        """The template each prompt option names, with this phase's parameters filled in."""
        values = dataclasses.asdict(self.params)
        return {option: template.format(**values) for option, template in self.prompts.items()}

    def prompt(self, kit: Kit, option: str = "prompt") -> Prompt:
        return kit.prompt(self.templates()[option], self.requires)

    def map(self, batch: list[Record], kit: Kit) -> list[Mapped]:
        raise NotImplementedError

    def select(self, features: list[Any]) -> Selection:
        raise NotImplementedError

    def run(self, records: list[Record], executor: Executor) -> Outcome:
        mapped = executor.map(self.map, records)
        return Outcome.of([m.record for m in mapped], self.select([m.features for m in mapped]))

    def summary(self, outcome: Outcome) -> list[str]:
        """The lines its command prints after the phase ran."""
        return []

    def workload(self, records: int) -> tuple[int, int]:
        """About how many model replies the phase asks for on `records` input records, and how many records
        it passes on, for the run's time estimate: by default a reply per record if it has a chat role, and
        every record passed on."""
        return (records if {"rewriter", "judge"} & set(self.roles) else 0), records

    def why_empty(self, outcome: Outcome) -> str:
        """Why the phase kept no record, for its command's error."""
        return f"{self.name} kept no record"

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        """One line for the report's table of phases, of what has no figure of its own."""
        return ""

    @classmethod
    def warnings(cls, entry: PhaseEntry) -> list[str]:
        """HTML warnings for the top of the report, e.g. about LIFT's known weaknesses."""
        return []

    @classmethod
    def report(cls, run: RunFolder) -> tuple[str, list[Plot]] | None:
        """The phase's section of the report (HTML and figures) where it finished; None: it has none."""
        return None


def all_phases() -> list[type[Phase]]:
    """Every phase, in run order: the modules of this package, and any other module that defined one."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(Phase._registry.values(), key=lambda cls: cls.order)
