"""Learner specs: which stream, features, target, River pipeline, metrics and drift detectors.

A spec is a pydantic object, loadable from YAML; the worker runs one online model per spec
(``EDDYLINE_LEARNERS``: built-in names or paths to YAML files). Two ship with eddyline,
``click`` (interactions) and ``satisfaction`` (feedback), in ``online_learning/specs/``.

A spec is checked when it is loaded, against the event model of its stream: every column
must exist, be of a kind its use allows, and survive the privacy stage (a redacted field is
null in every private row, so a model cannot learn from it).

The River pipeline is written as data: a list of steps, each ``{"module.Class": {kwargs}}``
(a kwarg may itself be ``{"module.Class": {...}}``), resolved inside the ``river`` package
only: a spec file cannot name arbitrary code.

Examples:
    >>> spec = load_spec("click")
    >>> spec.stream, [f.column for f in spec.features]
    ('interaction', ['item_category', 'position', 'dwell_time_s'])
    >>> type(spec.build_pipeline()[-1]).__name__
    'LogisticRegression'
    >>> LearnerSpec.model_validate({**spec.model_dump(), "features": [{"column": "nope"}]})
    Traceback (most recent call last):
    ...
    eddyline.online_learning.spec.LearnerSpecError: learner 'click': feature 'nope' ...
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eddyline.schemas.annotations import Redact
from eddyline.schemas.errors import UnknownSchemaError, UserError
from eddyline.schemas.events import BaseEvent, base_kind
from eddyline.schemas.registry import REGISTRY

SPECS_DIR = Path(__file__).parent / "specs"
BUILTIN = ("click", "satisfaction", "dwell", "action")
#: what a spec predicts: a 0/1 label, a number, or one of several classes
Kind = Literal["binary", "regression", "multiclass"]
#: rolling progressive metrics a spec may ask for (over the last 10,000 events)
Metric = Literal["error_rate", "accuracy", "log_loss", "brier", "mae", "rmse"]
#: the metrics each kind may ask for; the first three (two) are its default
METRICS: dict[str, tuple[Metric, ...]] = {
    "binary": ("error_rate", "accuracy", "log_loss", "brier"),
    "multiclass": ("error_rate", "accuracy", "log_loss"),
    "regression": ("mae", "rmse"),
}
_DEFAULT_METRICS = {"binary": 3, "multiclass": 3, "regression": 2}
_CLASS_KEY = re.compile(r"^[a-z_]+\.[A-Z]\w*$")
_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class LearnerSpecError(UserError):
    """A learner spec that cannot work: unknown column, wrong kind, bad pipeline, bad YAML."""


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Feature(_Spec):
    """One input column. ``numeric``: the value as a float (null -> 0); ``one_hot``: one
    0/1 column per value seen (or per listed ``categories``, a fixed set); ``hashed``: one-hot
    of a stable hash into ``buckets`` (high-cardinality ids); ``hour_of_day``: the hour of a
    timestamp column on the unit circle (two columns, sin and cos)."""

    column: str
    kind: Literal["numeric", "one_hot", "hashed", "hour_of_day"] = "numeric"
    categories: list[str] | None = None
    buckets: int = Field(default=64, ge=2, le=4_096)


class TargetRule(_Spec):
    """Binary specs: positive when ``column`` is one of ``is_in``, or at least ``at_least``.
    Regression and multi-class specs: the column's value itself (neither test)."""

    column: str
    is_in: list[str | bool | int] | None = None
    at_least: float | None = None

    @property
    def is_test(self) -> bool:
        return self.is_in is not None or self.at_least is not None


class Detector(_Spec):
    """The error's detector: CUSUM tests against a trailing reference
    (``online_learning/cusum.py``: ``threshold``), or River's ADWIN (``method: adwin``:
    ``delta``, ``clock``; ``online_learning/detectors.py``), behind a warm-up, a cooldown, a
    direction and a minimum move. Warm-up and cooldown default to the worker's
    ``EDDYLINE_DRIFT_WARMUP`` (the fewest values before the learning-curve rule may end it)
    / ``EDDYLINE_DRIFT_COOLDOWN`` (values after an alarm tested more strictly)."""

    method: Literal["cusum", "adwin"] = "cusum"
    threshold: float = Field(default=13.5, gt=0)  # cusum: larger is quieter and slower
    delta: float = Field(default=0.01, gt=0, lt=1)
    clock: int = Field(default=2, ge=1)
    warmup: int | None = Field(default=None, ge=0)
    cooldown: int | None = Field(default=None, ge=0)
    direction: Literal["up", "down", "both"] = "up"
    min_change: float = Field(default=0.0, ge=0)


class Watch(Detector):
    """A detector on another signal than the error: the label rate (prior drift) or a
    numeric column divided by ``scale`` (data drift), fed block means of ``block`` events.
    Quieter than the error detector by default (``delta`` 0.002, River's default): these
    signals move by chance over long streams, and a model that still predicts well
    rarely needs retraining for them."""

    method: Literal["adwin"] = "adwin"  # block means of any range: ADWIN, deaf in cooldown
    delta: float = Field(default=0.002, gt=0, lt=1)
    signal: Literal["label_rate", "feature"]
    column: str | None = None
    scale: float = Field(default=1.0, gt=0)
    block: int = Field(default=8, ge=1)
    direction: Literal["up", "down", "both"] = "both"
    min_change: float = Field(default=0.05, ge=0)

    @model_validator(mode="after")
    def _column_for_features(self) -> Watch:
        if (self.signal == "feature") != (self.column is not None):
            raise ValueError("a feature watch names its column; a label_rate watch does not")
        return self

    @property
    def key(self) -> str:
        return "label_rate" if self.signal == "label_rate" else f"feature:{self.column}"


class Drift(_Spec):
    error: Detector = Detector()
    watch: list[Watch] = Field(default_factory=list)


class LearnerSpec(_Spec):
    """One online model: what it reads, predicts, learns with, measures and watches."""

    name: str = Field(pattern=_NAME)
    version: int = Field(default=1, ge=1)
    stream: str
    #: binary (a 0/1 label: logistic family), regression (a number: linear family, drift on
    #: the absolute residual) or multiclass (one of several values: softmax family)
    kind: Kind = "binary"
    description: str = ""
    features: list[Feature] = Field(min_length=1)
    #: the label: the first rule whose column is not null decides; rows where every rule's
    #: column is null are not learned
    target: list[TargetRule] = Field(min_length=1)
    pipeline: list[Any] = Field(min_length=1)
    #: default: the kind's first metrics (METRICS)
    metrics: list[Metric] = Field(default_factory=list)
    drift: Drift = Drift()
    #: score the registry's retrained versions of this model on live batches (retraining)
    #: (every kind: the retraining job trains its family, docs/retraining.md)
    shadow: bool = True

    @model_validator(mode="before")
    @classmethod
    def _default_metrics(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("metrics"):
            kind = data.get("kind", "binary")
            if kind in METRICS:
                data = {**data, "metrics": list(METRICS[kind][: _DEFAULT_METRICS[kind]])}
        return data

    @model_validator(mode="after")
    def _check(self) -> LearnerSpec:
        self._check_kind()
        try:
            event = REGISTRY.latest(self.stream)
        except UnknownSchemaError:
            raise LearnerSpecError(
                f"learner {self.name!r}: no event type {self.stream!r} "
                f"(registered: {', '.join(REGISTRY.names())}; an event module defines others: "
                "EDDYLINE_EVENT_MODULES, or --module for `eddyline learners check`)"
            ) from None
        for f in self.features:
            _check_column(self, event, f.column, f.kind, "feature")
        for rule in self.target:
            kind = "numeric" if self.kind == "regression" else "target"
            _check_column(self, event, rule.column, kind, "target column")
        for w in self.drift.watch:
            if w.column is not None:
                _check_column(self, event, w.column, "numeric", "watched column")
        self.build_pipeline()  # fails here, with the step, not in the worker
        return self

    def _check_kind(self) -> None:
        where = f"learner {self.name!r} ({self.kind})"
        for rule in self.target:
            if self.kind == "binary" and (rule.is_in is None) == (rule.at_least is None):
                raise LearnerSpecError(
                    f"{where}: target rule on {rule.column!r} needs exactly one of is_in, at_least"
                )
            if self.kind != "binary" and rule.is_test:
                raise LearnerSpecError(
                    f"{where}: target {rule.column!r} is the value itself; is_in and at_least "
                    "are for binary specs"
                )
        wrong = [m for m in self.metrics if m not in METRICS[self.kind]]
        if wrong:
            raise LearnerSpecError(
                f"{where}: metric {wrong[0]!r} is not one of {', '.join(METRICS[self.kind])}"
            )
        if self.kind != "binary" and any(w.signal == "label_rate" for w in self.drift.watch):
            raise LearnerSpecError(f"{where}: a label_rate watch needs a binary spec")

    def build_pipeline(self) -> Any:
        """A fresh River pipeline from the ``pipeline`` steps."""
        from river import base, compose

        steps = [_construct(self, step) for step in self.pipeline]
        for step in steps:
            if not isinstance(step, base.Estimator):
                raise LearnerSpecError(
                    f"learner {self.name!r}: pipeline step {type(step).__name__} is not a River "
                    "estimator"
                )
        last, wanted = (
            steps[-1],
            {
                "binary": (base.Classifier, "a River classifier (the target is a 0/1 label)"),
                "multiclass": (base.Classifier, "a multi-class River classifier"),
                "regression": (base.Regressor, "a River regressor (the target is a number)"),
            }[self.kind],
        )
        if not isinstance(last, wanted[0]) or (
            self.kind == "multiclass" and not getattr(last, "_multiclass", False)
        ):
            raise LearnerSpecError(
                f"learner {self.name!r}: the last pipeline step must be {wanted[1]}; "
                f"got {type(last).__name__}"
            )
        return compose.Pipeline(*steps)

    def fingerprint(self) -> str:
        """SHA-256 of the spec's canonical JSON: a checkpoint of another spec is not reused."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_yaml(cls, path: str | Path) -> LearnerSpec:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise LearnerSpecError(f"cannot read learner spec {path}: {exc}") from None
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise LearnerSpecError(f"{path}: a learner spec is a mapping, got {kind}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise LearnerSpecError(f"{path}: {_explain(exc)}") from None
        except LearnerSpecError as exc:
            raise LearnerSpecError(f"{path}: {exc}") from None


def load_spec(name_or_path: str | Path) -> LearnerSpec:
    """A built-in spec by name (``click``, ``satisfaction``, ``dwell``, ``action``) or a
    YAML file by path."""
    text = str(name_or_path)
    if text in BUILTIN:
        return LearnerSpec.from_yaml(SPECS_DIR / f"{text}.yaml")
    path = Path(text)
    if not path.exists():
        raise LearnerSpecError(
            f"no learner spec {text!r}: neither a built-in ({', '.join(BUILTIN)}) nor a file"
        )
    return LearnerSpec.from_yaml(path)


def load_specs(names: str | list[str]) -> list[LearnerSpec]:
    """Specs from a comma-separated list (``EDDYLINE_LEARNERS``) or a list; names unique."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
    specs = [load_spec(n) for n in items if n]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise LearnerSpecError(f"two learner specs are named {spec.name!r}")
        seen.add(spec.name)
    return specs


def _explain(exc: ValidationError) -> str:
    # pydantic wraps an error raised in a validator; show ours as it was raised
    parts = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        where = ".".join(str(x) for x in err["loc"])
        parts.append(str(cause) if isinstance(cause, Exception) else f"{where}: {err['msg']}")
    return "; ".join(parts)


_NUMERIC = (int, float)


def _check_column(
    spec: LearnerSpec, event: type[BaseEvent], column: str, kind: str, what: str
) -> None:
    fields = event.model_fields
    if column not in fields:
        raise LearnerSpecError(
            f"learner {spec.name!r}: {what} {column!r} is not a field of {spec.stream} events "
            f"(fields: {', '.join(fields)})"
        )
    info = fields[column]
    if any(isinstance(m, Redact) for m in info.metadata):
        raise LearnerSpecError(
            f"learner {spec.name!r}: {what} {column!r} is redacted by the privacy stage; "
            "no private row carries it"
        )
    base = base_kind(info.annotation)
    ok = {
        "numeric": issubclass(base, _NUMERIC) and base is not bool,
        "one_hot": issubclass(base, str | bool | int),
        "hashed": issubclass(base, str | int),
        "hour_of_day": column == "occurred_at",
        "target": True,
    }[kind]
    if not ok:
        raise LearnerSpecError(
            f"learner {spec.name!r}: {what} {column!r} ({base.__name__}) cannot be used as {kind}"
        )


def _construct(spec: LearnerSpec, obj: Any) -> Any:
    """``{"module.Class": {kwargs}}`` -> an instance of ``river.module.Class``; lists and
    kwargs recursively; anything else as is."""
    if isinstance(obj, list):
        return [_construct(spec, o) for o in obj]
    if not (isinstance(obj, dict) and len(obj) == 1 and _CLASS_KEY.match(next(iter(obj)))):
        if isinstance(obj, dict):
            return {k: _construct(spec, v) for k, v in obj.items()}
        return obj
    [(path, kwargs)] = obj.items()
    module, cls_name = path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(f"river.{module}"), cls_name)
    except (ImportError, AttributeError):
        raise LearnerSpecError(f"learner {spec.name!r}: no River class river.{path}") from None
    kwargs = _construct(spec, kwargs or {})
    if not isinstance(kwargs, dict):
        raise LearnerSpecError(f"learner {spec.name!r}: river.{path} takes a mapping of arguments")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise LearnerSpecError(f"learner {spec.name!r}: river.{path}: {exc}") from None
