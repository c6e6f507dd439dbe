"""Field-level privacy annotations, carried in ``typing.Annotated`` metadata.

The privacy stage (``privacy.policy``) turns these into mechanisms; this module only defines
them and checks, when a model is defined, that each one can work on its field's type.

Examples:
    >>> from typing import Annotated
    >>> Annotated[float, Noise(lower=0.0, upper=300.0, epsilon=1.0)]  # doctest: +ELLIPSIS
    typing.Annotated[float, Noise(lower=0.0, upper=300.0, epsilon=1.0)]
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import SchemaError


class PrivacyAnnotation:
    """Base of every privacy annotation; ``kinds`` are the Python types it accepts."""

    kinds: tuple[type, ...] = ()

    def check(self, field: str, kind: type) -> None:
        """Raise :class:`SchemaError` when this annotation cannot apply to ``kind``."""
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
class Noise(PrivacyAnnotation):
    """Local-DP noise on a number clamped to ``[lower, upper]`` with budget ``epsilon``."""

    lower: float
    upper: float
    epsilon: float

    kinds = (int, float)

    def check(self, field: str, kind: type) -> None:
        super().check(field, kind)
        if issubclass(kind, bool):
            raise SchemaError(f"field {field!r}: Noise cannot apply to a bool")
        if not self.lower < self.upper:
            raise SchemaError(f"field {field!r}: Noise needs lower < upper")
        if not self.epsilon > 0:
            raise SchemaError(f"field {field!r}: Noise needs epsilon > 0")

    @property
    def sensitivity(self) -> float:
        """The L1 sensitivity of one value: the width of its declared bounds."""
        return self.upper - self.lower
