"""Field-level privacy annotations, carried in ``typing.Annotated`` metadata.

The privacy stage (``privacy.policy``) turns these into mechanisms; this module only defines
them and checks, when a model is defined, that each one can work on its field's type.

Examples:
    >>> from typing import Annotated
    >>> Annotated[float, Noise(lower=0.0, upper=300.0, epsilon=1.0)]  # doctest: +ELLIPSIS
    typing.Annotated[float, Noise(lower=0.0, upper=300.0, epsilon=1.0, delta=None)]
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

from eddyline.schemas.errors import SchemaError


class PrivacyAnnotation:
    """Base of every privacy annotation; ``kinds`` are the Python types it accepts."""

    kinds: tuple[type, ...] = ()

    def check(self, field: str, kind: type, annotation: Any = None) -> None:
        """Raise :class:`SchemaError` when this annotation cannot apply to ``kind``.

        ``annotation`` is the field's full type (e.g. a ``Literal``), for finer checks.
        """
        if self.kinds and not issubclass(kind, self.kinds):
            names = ", ".join(k.__name__ for k in self.kinds)
            raise SchemaError(
                f"field {field!r}: {type(self).__name__} needs a field of type {names}, "
                f"not {kind.__name__}"
            )


@dataclass(frozen=True)
class Pseudonymize(PrivacyAnnotation):
    """Replace the value with a keyed HMAC pseudonym (column ``<field>_pid``)."""

    kinds = (str,)


@dataclass(frozen=True)
class Redact(PrivacyAnnotation):
    """Drop the value at the privacy boundary: it never reaches a private topic."""


@dataclass(frozen=True)
class Scrub(PrivacyAnnotation):
    """Keep free text, but mask e-mail addresses, phone numbers, card numbers, IP addresses
    and secrets found in it (``privacy.scrub``). Use ``Redact`` when the text must not leave."""

    kinds = (str,)


@dataclass(frozen=True)
class Noise(PrivacyAnnotation):
    """Local-DP noise on a number clamped to ``[lower, upper]`` with budget ``epsilon``.

    Without ``delta``: discrete Laplace noise, pure ε-DP. With ``delta``: discrete Gaussian
    noise, (ε, δ)-DP (lighter tails; composes better over many events of one user).
    """

    lower: float
    upper: float
    epsilon: float
    delta: float | None = None

    kinds = (int, float)

    def check(self, field: str, kind: type, annotation: Any = None) -> None:
        super().check(field, kind)
        if issubclass(kind, bool):
            raise SchemaError(f"field {field!r}: Noise cannot apply to a bool")
        if not self.lower < self.upper:
            raise SchemaError(f"field {field!r}: Noise needs lower < upper")
        if not self.epsilon > 0:
            raise SchemaError(f"field {field!r}: Noise needs epsilon > 0")
        if self.delta is not None and not 0 < self.delta < 1:
            raise SchemaError(f"field {field!r}: Noise needs 0 < delta < 1 (or no delta)")

    @property
    def sensitivity(self) -> float:
        """The L1 sensitivity of one value: the width of its declared bounds."""
        return self.upper - self.lower


@dataclass(frozen=True)
class RandomizedResponse(PrivacyAnnotation):
    """k-ary randomised response over declared ``categories`` with budget ``epsilon``.

    The true category is kept with probability e^ε / (e^ε + k - 1), else replaced by one of
    the other k - 1 uniformly; ``privacy.estimators`` undoes this in aggregate.

    ``encoding="unary"`` uses optimised unary encoding instead: the released value is the
    list of categories whose noisy bit is 1 (an Arrow ``list<string>`` column). Choose it
    when there are many categories: it wins once k > 3 e^ε + 2.
    """

    categories: tuple[str, ...]
    epsilon: float
    encoding: Literal["direct", "unary"] = "direct"

    kinds = (str,)

    def check(self, field: str, kind: type, annotation: Any = None) -> None:
        super().check(field, kind)
        if len(set(self.categories)) < 2 or len(set(self.categories)) != len(self.categories):
            raise SchemaError(f"field {field!r}: RandomizedResponse needs 2+ distinct categories")
        if not self.epsilon > 0:
            raise SchemaError(f"field {field!r}: RandomizedResponse needs epsilon > 0")
        if self.encoding not in ("direct", "unary"):
            raise SchemaError(
                f"field {field!r}: RandomizedResponse encoding must be 'direct' or 'unary', "
                f"not {self.encoding!r}"
            )
        literal = _literal_values(annotation)
        if literal is not None and set(literal) != set(self.categories):
            raise SchemaError(
                f"field {field!r}: RandomizedResponse categories "
                f"{sorted(self.categories)} differ from the field's values "
                f"{sorted(literal)}"
            )


def _literal_values(annotation: Any) -> tuple[Any, ...] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if len(args) == 1:
        return _literal_values(args[0])
    return None
