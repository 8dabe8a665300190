"""A scorer fitted to the user's own reference scores (`lift-local judge-fit`), and its file.

The user's sample of records with a reference score (GPT-4's, people's) teaches what a small judge alone does
not carry: features of each record (`features.FeatureSpec`) are standardised and a ridge regression predicts
the reference score, its penalty chosen by an inner cross-validation. Its quality is measured honestly: K-fold
cross-validation grouped by instruction (answers to one question never on both sides of a split), the
out-of-fold predictions compared with the reference as `judge-eval` compares a judge, beside the raw judge,
the length alone and a random score on the same records.

The scorer file is JSON, safe to share and to read (never pickle): the feature specification, each model it
reads with the digest of its weights (a model that is missing or differs is an error naming it), the scaler
and the coefficients. Its score is the predicted reference score, put on 0-100 as the reference is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .. import models
from ..errors import InputError, ModelError
from ..params import Params, option
from ..records import Record, atomic_path
from .agreement import ScoreTable, compare
from .features import KINDS, POOLINGS, FeatureSpec, HiddenSpec, Pooling, model_digests
from .protocol import Verdict


@dataclasses.dataclass(frozen=True)
class FitParams(Params):
    """How `judge-fit` fits and evaluates a scorer; the defaults are the measured best (docs/judges.md)."""

    features: str = option(
        "length,hidden", "The features, comma-separated: judge (the judges' expected score per dimension), "
        "length (of question and answer), hidden (the reader model's hidden states), embedder (the embedder's "
        "vectors of question and answer).", metavar="NAMES", check=lambda text: _feature_names(text),
    )
    layer: int = option(0, "The reader's layer whose hidden states are read; 0: its middle layer.", low=0)
    pooling: Pooling = option("answer", "How the layer's token states become one vector: mean (every token), "
                              "answer (the answer's tokens) or last (the last token).")
    max_tokens: int = option(512, "Tokens of question and answer read at most (the answer is cut).", low=8)
    folds: int = option(5, "Folds of the cross-validation, grouped by instruction.", low=2)
    seed: int = option(0, "Seed of the folds.", low=0)

    @property
    def kinds(self) -> list[str]:
        return _feature_names(self.features)


def _feature_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in KINDS]
    if unknown or not names:
        raise ValueError(f"unknown feature(s) {', '.join(unknown) or repr(text)}: choose from {', '.join(KINDS)}")
    return names


FORMAT = "lift-local scorer"
VERSION = 2  # 2: hidden states under the final norm (vLLM), where 1 read the layer's raw output
ALPHAS = np.logspace(-2, 5, 15)  # ridge penalties tried by the inner cross-validation
INNER_FOLDS = 4


def spearman_score(estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
    """How the inner cross-validation picks the penalty: what the selection needs is the reference's order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # a penalty so high every score is equal
        value = stats.spearmanr(estimator.predict(X), y).statistic
    return -1.0 if math.isnan(value) else float(value)


def fit(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> Any:
    """Standardised features and a ridge regression, its penalty chosen by grouped inner cross-validation."""
    # Here, not at the top: scikit-learn takes ~0.5 s to import, and every lift-local command imports this module.
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inner = GroupKFold(n_splits=min(INNER_FOLDS, len(np.unique(groups))), shuffle=True, random_state=seed)
    search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": ALPHAS}, cv=inner,
                          scoring=spearman_score)
    return search.fit(X, y, groups=groups).best_estimator_


def splits(groups: np.ndarray, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) positions of each fold: every group (instruction) wholly on one side."""
    from sklearn.model_selection import GroupKFold

    return list(GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(groups, groups=groups))


def out_of_fold(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Each record's prediction by a scorer fitted on the folds without its instruction."""
    predictions = np.empty(len(y), dtype=float)
    for train, test in splits(groups, folds, seed):
        predictions[test] = fit(X[train], y[train], groups[train], seed).predict(X[test])
    return predictions


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A fitted scorer: what it reads, the digests of the models it reads with, and the linear model."""

    spec: FeatureSpec
    models: dict[str, dict[str, str]]  # "judge" / "reader" / "embedder" -> model name -> digest of its weights
    columns: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    reference: dict[str, Any]  # field, scale (the reference's maximum), file, records, instructions
    cross_validation: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, model: Any, spec: FeatureSpec, columns: list[str], models: dict[str, dict[str, str]],
           reference: dict[str, Any], cross_validation: dict[str, Any]) -> Scorer:
        scaler, ridge = model.named_steps["standardscaler"], model.named_steps["ridge"]
        return cls(spec, models, columns, scaler.mean_.tolist(), scaler.scale_.tolist(), ridge.coef_.tolist(),
                   float(ridge.intercept_), float(ridge.alpha), reference, cross_validation)

    def score(self, X: np.ndarray) -> np.ndarray:
        """The predicted reference score on 0-100 (clipped); NaN where a feature is missing (a judge failed)."""
        z = (X - np.asarray(self.mean)) / np.asarray(self.scale)
        predicted = z @ np.asarray(self.coef) + self.intercept
        return np.clip(100 * predicted / self.reference["scale"], 0, 100)

    def to_json(self) -> dict[str, Any]:
        hidden = dataclasses.asdict(self.spec.hidden) if self.spec.hidden else None
        return {
            "format": FORMAT, "version": VERSION,
            "features": {"judges": list(self.spec.judges), "length": self.spec.length, "hidden": hidden,
                         "embedder": self.spec.embedder},
            "models": self.models, "reference": self.reference, "cross_validation": self.cross_validation,
            "scaler": {"mean": self.mean, "scale": self.scale},
            "ridge": {"alpha": self.alpha, "intercept": self.intercept, "coef": self.coef},
            "columns": self.columns,
        }

    def save(self, path: Path) -> str:
        """Write the scorer as JSON; its SHA-256, which a run's manifest pins."""
        text = json.dumps(self.to_json(), indent=1) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path: Path | str) -> Scorer:
        """Read and check a scorer file: anything that is not one, or edited into nonsense, is an error naming
        the key that is wrong."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, None, "no such scorer file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(path, None, f"cannot be read: {err}") from None
        except json.JSONDecodeError as err:
            raise InputError(path, f"line {err.lineno} column {err.colno}", f"not JSON: {err.msg}") from None
        return _parse(path, data)

    def check_models(self, kit: Any) -> None:
        """The models `kit` reads with are the scorer's: its judges, by name, and every model's weights, by
        digest (`features.model_digests`); a model missing here is an error naming it too."""
        judges = tuple(judge.name for judge in kit.chats("judge"))
        if self.spec.judges and judges != self.spec.judges:
            raise ModelError(f"the scorer reads the verdicts of the judge(s) {' + '.join(self.spec.judges)}, but the "
                             f"judge(s) here are {' + '.join(judges)}: judge with the scorer's (--judge), or fit a "
                             "scorer on these")
        digests = model_digests(self.spec, kit)
        for role, wanted in self.models.items():
            for name, digest in wanted.items():
                found = digests.get(role, {}).get(name)
                if found != digest:
                    raise ModelError(f"the scorer reads the {role} {name}, whose weights here (digest {str(found)[:12]}) "
                                     f"differ from those it was fitted with ({digest[:12]}): fit it again with "
                                     "`lift-local judge-fit`, or give it the model it was fitted with")


def file_digest(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _parse(path: Path, data: Any) -> Scorer:
    def fail(key: str, problem: str) -> InputError:
        return InputError(path, key, problem)

    def take(owner: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(owner, dict) or key not in owner:
            raise fail(where, f"missing '{key}'")
        value, kinds = owner[key], kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise fail(f"{where}.{key}" if where else key, f"must be {_kind(kind)}, got {value!r}")
        return value

    def numbers(owner: dict, key: str, where: str, length: int | None = None) -> list[float]:
        values = take(owner, key, list, where)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise fail(f"{where}.{key}", "must be a list of finite numbers")
        if length is not None and len(values) != length:
            raise fail(f"{where}.{key}", f"has {len(values)} numbers for the {length} columns")
        return [float(v) for v in values]

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise fail("format", f"not a lift-local scorer (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise fail("version", f"version {data.get('version')!r}; this lift-local reads version {VERSION}")
    features = take(data, "features", dict, "")
    judges = take(features, "judges", list, "features")
    if not all(isinstance(name, str) and name for name in judges):
        raise fail("features.judges", "must be a list of model names")
    hidden = features.get("hidden")
    if hidden is not None:
        pooling, layer = take(hidden, "pooling", str, "features.hidden"), take(hidden, "layer", int, "features.hidden")
        max_tokens = take(hidden, "max_tokens", int, "features.hidden")
        if pooling not in POOLINGS or layer < 1 or max_tokens < 8:
            raise fail("features.hidden", f"needs a layer of at least 1, max_tokens of at least 8 and a pooling of "
                                          f"{', '.join(POOLINGS)}: got {hidden}")
        hidden = HiddenSpec(take(hidden, "reader", str, "features.hidden"), layer, pooling, max_tokens)
    embedder = features.get("embedder")
    if embedder is not None and not isinstance(embedder, str):
        raise fail("features.embedder", f"must be a model name or null, got {embedder!r}")
    spec = FeatureSpec(tuple(judges), take(features, "length", bool, "features"), hidden, embedder)
    if not spec.kinds:
        raise fail("features", "reads no feature at all")
    columns = take(data, "columns", list, "")
    width = len(columns)
    scaler, ridge = take(data, "scaler", dict, ""), take(data, "ridge", dict, "")
    mean, scale = numbers(scaler, "mean", "scaler", width), numbers(scaler, "scale", "scaler", width)
    if any(s <= 0 for s in scale):
        raise fail("scaler.scale", "must be positive")
    coef = numbers(ridge, "coef", "ridge", width)
    intercept, alpha = take(ridge, "intercept", (int, float), "ridge"), take(ridge, "alpha", (int, float), "ridge")
    models = take(data, "models", dict, "")
    for role, named in models.items():
        if not isinstance(named, dict) or not all(isinstance(d, str) and len(d) == 64 for d in named.values()):
            raise fail(f"models.{role}", "must map model names to the 64-digit digests of their weights")
    reference = take(data, "reference", dict, "")
    if take(reference, "scale", (int, float), "reference") <= 0:
        raise fail("reference.scale", "must be positive")
    return Scorer(spec, models, columns, mean, scale, coef, float(intercept), float(alpha), reference,
                  data.get("cross_validation", {}))


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "true or false",
             float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


@dataclasses.dataclass(frozen=True)
class Sample:
    """The records a scorer is fitted on: their reference scores on the reference's own scale, and their
    instructions as the groups of the cross-validation (answers to one question never on both sides)."""

    path: str
    ids: list[str]
    y: np.ndarray
    groups: np.ndarray
    scale: float

    @classmethod
    def of(cls, path: Path | str, records: Sequence[Record], reference: ScoreTable, scale: float, folds: int) -> Sample:
        """The sample, or an error saying why it is too small (or too uniform) to fit and evaluate."""
        y = np.array([reference.totals[r.id] for r in records]) * scale / 100
        _, groups = np.unique([f"{r.instruction}\x1f{r.input}" for r in records], return_inverse=True)
        distinct = len(np.unique(groups))
        if distinct < folds:
            raise InputError(path, None, f"{len(y)} records answer {distinct} distinct instructions, fewer than the "
                                         f"{folds} folds of the cross-validation (--folds): fitting needs at least "
                                         "one instruction per fold, and far more to fit well")
        if np.ptp(y) == 0:
            raise InputError(path, None, f"every one of the {len(y)} reference scores is {y[0]:g}: there is nothing "
                                         "to learn to rank")
        return cls(str(path), [r.id for r in records], y, groups, scale)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A scorer's cross-validated agreement (its out-of-fold scores as a table), and the model fitted on
    every usable record."""

    label: str
    table: ScoreTable
    model: Any
    sizes: dict[str, int]
    cross_validation: dict[str, Any]
    unusable: int  # records left out: a judge gave them no valid verdict


def evaluate(sample: Sample, X: np.ndarray, params: FitParams, spec: FeatureSpec) -> Evaluation:
    """Cross-validated out-of-fold scores, then the scorer fitted on every record with every feature."""
    usable = ~np.isnan(X).any(axis=1)
    if usable.sum() < len(usable) and len(np.unique(sample.groups[usable])) < params.folds:
        raise InputError(sample.path, None, f"only {int(usable.sum())} records have a valid verdict of every judge: "
                                            "too few to fit")
    X, y, groups = X[usable], sample.y[usable], sample.groups[usable]
    ids = [i for i, keep in zip(sample.ids, usable) if keep]
    predicted = np.clip(100 * out_of_fold(X, y, groups, params.folds, params.seed) / sample.scale, 0, 100)
    label = f"scorer ({' + '.join(spec.kinds)}), {params.folds}-fold out-of-fold"
    table = ScoreTable(label, label, dict(zip(ids, map(float, predicted))), {},
                       frozenset(i for i, keep in zip(sample.ids, usable) if not keep))
    reference = ScoreTable("reference", "reference", dict(zip(ids, map(float, 100 * y / sample.scale))), {}, frozenset())
    agreement = compare(table, reference, top=0.5, bins=10).overall
    cross_validation = {"folds": params.folds, "seed": params.seed, "records": len(ids), "spearman": agreement.spearman,
                        "spearman_interval": list(agreement.intervals.get("spearman", ())),
                        "pearson": agreement.pearson}
    return Evaluation(label, table, fit(X, y, groups, params.seed),
                      {"records": len(ids), "instructions": len(np.unique(groups))}, cross_validation,
                      int((~usable).sum()))


def feature_spec(params: FitParams, kit: Any) -> FeatureSpec:
    """The features `params` asks for, read with the models of `kit` (a Workbench), named as the registry
    names them; the reader's layer 0 is its middle layer."""
    kinds = params.kinds
    hidden = None
    if "hidden" in kinds:
        reader = models.resolve("reader", kit.models.chosen("reader")[0])
        layers = json.loads((models.ensure_present(reader) / "config.json").read_text())["num_hidden_layers"]
        hidden = HiddenSpec(reader.name, params.layer or layers // 2, params.pooling, params.max_tokens)
    embedder = models.resolve("embedder", kit.models.chosen("embedder")[0]).name if "embedder" in kinds else None
    judges = tuple(judge.name for judge in kit.chats("judge")) if "judge" in kinds else ()
    return FeatureSpec(judges, "length" in kinds, hidden, embedder)


def verdicts_in_order(records: Sequence[Record], scored: Sequence[Record]) -> list[list[Verdict]]:
    """Each record's verdicts, in the order of `records`, from the quality phase's scored records."""
    by_id = {record.id: Verdict.all(record) for record in scored}
    return [by_id[record.id] for record in records]
