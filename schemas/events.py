"""Event models: the base event, the built-in interaction and feedback events, drift events.

An app defines its own event type by subclassing :class:`BaseEvent` with a stable
``event_name`` and an integer ``event_version``; the class registers itself.

Examples:
    >>> e = InteractionEvent(user_id="u1", app_id="shop", item_id="sku-1",
    ...                      item_category="news", action="click", dwell_time_s=12.5)
    >>> e.schema_id()
    'interaction:1'
"""

from __future__ import annotations

import math
import os
import random
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID, SafeUUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from eddyline.schemas.annotations import Noise, PrivacyAnnotation, Pseudonymize, Redact
from eddyline.schemas.contracts import Compatibility
from eddyline.schemas.errors import SchemaError
from eddyline.schemas.registry import REGISTRY, SchemaRegistry

Action = Literal["view", "click", "purchase", "skip"]


def _now() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How old an event's ``occurred_at`` may be, and how far ahead of the receiving clock
#: (a client's clock may be off by a time zone or two), by default: events outside are
#: refused at ``emit`` and dead-lettered by the worker (``too_old`` / ``in_the_future``).
MAX_EVENT_AGE = timedelta(days=365)
MAX_CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True)
class TimeWindow:
    """The ``occurred_at`` values accepted now: at most ``max_age`` old, at most
    ``max_skew`` ahead of this machine's clock (``EDDYLINE_MAX_EVENT_AGE_S``,
    ``EDDYLINE_MAX_CLOCK_SKEW_S`` for the worker)."""

    max_age: timedelta = MAX_EVENT_AGE
    max_skew: timedelta = MAX_CLOCK_SKEW
    _age_s: float = field(init=False, repr=False, compare=False)
    _skew_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # in seconds, for the per-event check
        object.__setattr__(self, "_age_s", self.max_age.total_seconds())
        object.__setattr__(self, "_skew_s", self.max_skew.total_seconds())

    def bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        now = now or datetime.now(UTC)
        return now - self.max_age, now + self.max_skew

    def bounds_us(self, now: datetime | None = None) -> tuple[int, int]:
        """The bounds as microseconds since the epoch."""
        low, high = self.bounds(now)
        return micros(low), micros(high)


def micros(at: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _plausible_time(value: datetime, info: ValidationInfo) -> datetime:
    """``occurred_at`` must be a UTC time of years 1-9999 inside the accepted window
    (``TimeWindow``; the worker passes its own as validation context ``time_window``).
    Compared as epoch seconds: every event built with a time pays for this check."""
    try:
        at = value.timestamp()
    except (OverflowError, ValueError):
        at = math.inf
    context = info.context
    window = context.get("time_window", _DEFAULT_WINDOW) if context else _DEFAULT_WINDOW
    now = time.time()
    if now - window._age_s <= at <= now + window._skew_s and _FIRST_S <= at < _AFTER_LAST_S:
        return value
    if not _FIRST_S <= at < _AFTER_LAST_S:
        raise ValueError("not a time of years 1-9999 in UTC")
    if at < now - window._age_s:
        raise ValueError(f"older than the accepted {window.max_age.days} days")
    hours = window._skew_s / 3600
    raise ValueError(f"more than {hours:g} h ahead of this machine's clock")


_FIRST_S = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()
_AFTER_LAST_S = (datetime(9999, 12, 31, tzinfo=UTC) - EPOCH).total_seconds() + 86_400
_DEFAULT_WINDOW = TimeWindow()


# Event ids need uniqueness, not secrecy: 122 random bits from a generator seeded from the
# OS CSPRNG (once, and again in every forked child: preforking servers such as gunicorn
# would otherwise give each worker the same sequence of ids) cost a third of uuid4(), which
# reads os.urandom for every id.
_ids = random.Random(os.urandom(32))  # noqa: S311 - ids are not secrets
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
_V4_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_V4_BITS = (0x4000 << 64) | (0x8000 << 48)
_new, _set, _unknown = object.__new__, object.__setattr__, SafeUUID.unknown


def _unchecked_uuid(value: int) -> UUID:
    """``UUID(int=value)`` without its argument checks (~1 µs, a fifth of building an
    event): the value is a 128-bit int by construction. Checked against ``UUID(int=)``
    at import; a CPython whose UUID differs gets the checked constructor."""
    u = _new(UUID)
    _set(u, "int", value)
    _set(u, "is_safe", _unknown)
    return u


def _checked_uuid(value: int) -> UUID:
    return UUID(int=value)


def _same_as_uuid(make: Callable[[int], UUID]) -> bool:
    try:
        probe = (0x1234 << 112) | _V4_BITS
        u, ref = make(probe), UUID(int=probe)
        return u == ref and str(u) == str(ref) and hash(u) == hash(ref) and u.version == 4
    except (AttributeError, TypeError):
        return False


_uuid_of = _unchecked_uuid if _same_as_uuid(_unchecked_uuid) else _checked_uuid


def new_event_id() -> UUID:
    """A random (version 4) UUID."""
    return _uuid_of((_ids.getrandbits(128) & _V4_MASK) | _V4_BITS)


def random_id_bytes(n: int) -> bytes:
    """``16 * n`` random bytes from the event-id generator, for ids made in bulk
    (``schemas.arrow.new_uuid_column`` sets their version and variant bits)."""
    return _ids.getrandbits(128 * n).to_bytes(16 * n, "big")


def base_kind(annotation: Any) -> type:
    """The Python type under Optional/Literal, for annotation checks."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return base_kind(args[0])
    if origin is Literal:
        return type(args[0])
    return annotation if isinstance(annotation, type) else object


class BaseEvent(BaseModel):
    """Fields every event carries. Subclasses set ``event_name`` and ``event_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_name: ClassVar[str] = ""
    event_version: ClassVar[int] = 1
    #: How a new version must relate to earlier ones (``eddyline schemas check``).
    compatibility: ClassVar[Compatibility] = "BACKWARD"
    #: Where the class registers itself; tests pass a registry of their own.
    event_registry: ClassVar[SchemaRegistry] = REGISTRY
    #: An event past its user's privacy budget is ``"suppress"``-ed (not released at all)
    #: or ``"coarsen"``-ed: released with every noised or randomised field set to null, so
    #: it spends no budget (its unprotected fields, its timing and its count still show).
    over_budget: ClassVar[Literal["suppress", "coarsen"]] = "suppress"

    event_id: UUID = Field(default_factory=new_event_id)
    user_id: Annotated[str, Field(min_length=1, max_length=256), Pseudonymize()]
    occurred_at: Annotated[AwareDatetime, AfterValidator(_plausible_time)] = Field(
        default_factory=_now
    )
    app_id: Annotated[str, Field(min_length=1, max_length=128)]
    #: Consent: may this event be stored (Delta)? used for learning? The privacy stage obeys.
    consent_store: bool = True
    consent_learn: bool = True

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, PrivacyAnnotation):
                    meta.check(name, base_kind(info.annotation), info.annotation)
        if cls.event_name:
            cls.event_registry.register(cls)

    @classmethod
    def schema_id(cls) -> str:
        """The stable id of this model on the wire: ``name:version``."""
        if not cls.event_name:
            raise SchemaError(f"{cls.__name__} has no event_name")
        return f"{cls.event_name}:{cls.event_version}"

    @classmethod
    def privacy_fields(cls) -> dict[str, PrivacyAnnotation]:
        """Each annotated field and its privacy annotation."""
        out: dict[str, PrivacyAnnotation] = {}
        for name, info in cls.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, PrivacyAnnotation):
                    out[name] = meta
        return out


class InteractionEvent(BaseEvent):
    """A user interacting with an item: a view, click, purchase or skip."""

    event_name: ClassVar[str] = "interaction"
    event_version: ClassVar[int] = 1

    item_id: Annotated[str, Field(min_length=1, max_length=256)]
    item_category: Annotated[str, Field(min_length=1, max_length=64)]
    action: Action
    # Validation accepts a day; the noise clamps to five minutes, the range that matters.
    dwell_time_s: Annotated[float, Field(ge=0, le=86_400), Noise(lower=0, upper=300, epsilon=1.0)]
    position: Annotated[int, Field(ge=0, le=1_000)] = 0


class FeedbackEvent(BaseEvent):
    """Explicit feedback on an item: a rating, a thumbs up/down label, an optional comment."""

    event_name: ClassVar[str] = "feedback"
    event_version: ClassVar[int] = 1

    item_id: Annotated[str, Field(min_length=1, max_length=256)]
    rating: Annotated[int | None, Field(ge=1, le=5)] = None
    label: bool | None = None
    comment: Annotated[str | None, Field(max_length=4_000), Redact()] = None

    @model_validator(mode="after")
    def _rating_or_label(self) -> FeedbackEvent:
        if self.rating is None and self.label is None:
            raise ValueError("feedback needs a rating or a label")
        return self


class DriftEvent(BaseModel):
    """A drift signal from an online model, published on ``signals.drift``.

    It holds no personal data: only model names, statistics and stream positions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    drift_id: UUID = Field(default_factory=new_event_id)
    idempotency_key: str
    model: str
    model_version: int
    stream: str
    #: error_rate (a classifier's 0/1 error) or residual (a regression's absolute error):
    #: concept drift; label_rate: prior drift; feature: data drift
    signal: Literal["error_rate", "residual", "feature", "label_rate"]
    feature: str | None = None  # the column, for signal "feature"
    detector: str
    severity: float
    stat_before: float
    stat_after: float
    events_seen: int
    # Per raw-topic partition: the raw offsets the "after" window covers (the offsets each
    # Delta commit records as an app transaction, so a job can map them to table versions).
    offsets_after: dict[int, tuple[int, int]]
    #: The Delta version current when the change was detected, and the newest version that
    #: holds only data from before the "after" window: time travel to ``lake_version_before``
    #: for pre-change data; rows added after it (up to now) hold the change.
    lake_version: int | None = None
    lake_version_before: int | None = None
    detected_at: AwareDatetime = Field(default_factory=_now)


class ModelEvent(BaseModel):
    """A change to a model, published on ``signals.models``: an online model's checkpoint
    (``kind="checkpoint"``), or a registry change from retraining (``registered``,
    ``promoted``, ``rolled_back``, ``rejected``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    model_version: int
    kind: Literal["checkpoint", "registered", "promoted", "rolled_back", "rejected"] = "checkpoint"
    checkpoint: int = 0  # increases with every checkpoint of an online model
    events_seen: int = 0
    offsets: dict[int, int] = Field(default_factory=dict)  # raw partition -> last offset learned
    error_rate: float | None = None  # recent progressive error, if known
    #: rolling progressive metrics (error_rate, accuracy, log_loss, events in the window)
    metrics: dict[str, float] = Field(default_factory=dict)
    #: the same window's predictions in 10 probability bins: [count, mean predicted,
    #: observed positive rate] per bin (OnlineModel.calibration)
    calibration: list[list[float]] = Field(default_factory=list)
    alias: str | None = None  # registry changes: the alias that moved (champion, challenger)
    previous_version: int | None = None  # the version the alias pointed to before
    reason: str | None = None
    created_at: AwareDatetime = Field(default_factory=_now)
