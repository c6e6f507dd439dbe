"""A privacy policy built from a model's annotations, applied to an Arrow batch.

``apply`` is the privacy boundary: what it returns may be stored and learned from; nothing
it drops or replaces (raw ids, redacted text, exact values, masked strings) leaves it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from eddyline.privacy.draws import as_draws
from eddyline.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponseMechanism,
    Randomness,
    UnaryEncodingMechanism,
)
from eddyline.privacy.pseudonymize import Encoding, HmacPseudonymizer
from eddyline.privacy.scrub import scrub
from eddyline.schemas.annotations import Noise, Pseudonymize, RandomizedResponse, Redact, Scrub
from eddyline.schemas.errors import SchemaError
from eddyline.schemas.events import BaseEvent

NumericMechanism = LaplaceMechanism | GaussianMechanism
CategoricalMechanism = RandomizedResponseMechanism | UnaryEncodingMechanism
AnyMechanism = NumericMechanism | CategoricalMechanism


def pid_column(name: str) -> str:
    """The column a pseudonymised field becomes: ``user_id`` -> ``user_pid``."""
    return f"{name[:-3] if name.endswith('_id') else name}_pid"


@dataclass(frozen=True)
class PrivacyPolicy:
    """How each field of one model crosses the boundary."""

    model: type[BaseEvent]
    pseudonymized: tuple[str, ...]
    redacted: tuple[str, ...]
    noised: tuple[tuple[str, NumericMechanism], ...]
    randomized: tuple[tuple[str, CategoricalMechanism], ...] = ()
    scrubbed: tuple[str, ...] = ()

    @classmethod
    def for_model(cls, model: type[BaseEvent]) -> PrivacyPolicy:
        """Read the policy off ``model``'s annotations; fail now if one cannot apply."""
        pseud, redact, noise, rr, scrubbed = [], [], [], [], []
        for name, ann in model.privacy_fields().items():
            if isinstance(ann, Pseudonymize):
                pseud.append(name)
            elif isinstance(ann, Redact):
                redact.append(name)
            elif isinstance(ann, Scrub):
                scrubbed.append(name)
            elif isinstance(ann, Noise):
                numeric: NumericMechanism = (
                    LaplaceMechanism(ann.epsilon, ann.lower, ann.upper)
                    if ann.delta is None
                    else GaussianMechanism(ann.epsilon, ann.lower, ann.upper, ann.delta)
                )
                noise.append((name, numeric))
            elif isinstance(ann, RandomizedResponse):
                categorical: CategoricalMechanism = (
                    UnaryEncodingMechanism(ann.epsilon, ann.categories)
                    if ann.encoding == "unary"
                    else RandomizedResponseMechanism(ann.epsilon, ann.categories)
                )
                rr.append((name, categorical))
            else:
                raise SchemaError(f"{model.__name__}.{name}: no mechanism for {ann!r}")
        for _, m in noise:
            if isinstance(m, GaussianMechanism):
                _ = m.sigma  # calibrate now (dp-accounting): a bad (ε, δ) fails at start-up
        return cls(model, tuple(pseud), tuple(redact), tuple(noise), tuple(rr), tuple(scrubbed))

    @property
    def mechanisms(self) -> list[AnyMechanism]:
        """The mechanisms one event goes through: what the budget accounts for."""
        return [m for _, m in self.noised] + [m for _, m in self.randomized]

    def apply(
        self,
        table: pa.Table,
        pseudonymizer: HmacPseudonymizer,
        rng: Randomness,
        found: Counter[str] | None = None,
        encodings: dict[str, Encoding] | None = None,
    ) -> pa.Table:
        """The privatised batch: pseudonyms (+ key id), redactions dropped, numbers noised,
        categories randomised, kept free text scrubbed (what was masked counted in ``found``;
        each pseudonym column's encoding, when there is one, in ``encodings``).

        ``rng``: a generator, or draws by row (``privacy.draws``); each field draws from its
        own stream, numbered by its place in the model, so one field's draws never depend
        on another's."""
        out = table.drop_columns(list(self.redacted))
        draws = as_draws(rng, table.num_rows)
        stream = {name: i for i, name in enumerate(self.model.model_fields)}
        for name, mech in self.noised:
            col = out[name]
            # A null stays null (an optional field left out): only given values are noised.
            values = pc.fill_null(col, mech.lower) if col.null_count else col
            noised = pa.array(
                mech.apply(values.to_numpy(), draws.stream(stream[name])), pa.float64()
            )
            idx = out.schema.get_field_index(name)
            out = out.set_column(idx, name, _with_nulls_of(col, noised))
        for name, cat in self.randomized:
            col = out[name]
            cats = pa.array(cat.categories)
            idx = pc.fill_null(pc.index_in(col, value_set=cats), 0)
            values = idx.to_numpy(zero_copy_only=False)
            own = draws.stream(stream[name])
            reported: pa.Array | pa.ChunkedArray
            if isinstance(cat, UnaryEncodingMechanism):
                reported = cat.to_arrow(cat.bits(values, own))
            else:
                reported = pc.take(cats, pa.array(cat.apply(values, own)))
            out = out.set_column(
                out.schema.get_field_index(name), name, _with_nulls_of(col, reported)
            )
        for name in self.scrubbed:
            text, masked = scrub(out[name])
            out = out.set_column(out.schema.get_field_index(name), name, text)
            if found is not None:
                found.update(masked)
        key_ids = None
        for name in self.pseudonymized:
            pids, key_ids, encoding = pseudonymizer.encode_at(out[name], out["occurred_at"])
            out = out.set_column(out.schema.get_field_index(name), pid_column(name), pids)
            if encodings is not None and encoding is not None:
                encodings[pid_column(name)] = encoding
        if key_ids is not None:
            out = out.append_column("key_id", key_ids)
        return out


def _with_nulls_of(
    original: pa.ChunkedArray, released: pa.Array | pa.ChunkedArray
) -> pa.Array | pa.ChunkedArray:
    """``released`` with a null wherever ``original`` had one. Whether an optional field was
    given at all is released as it is (docs/privacy.md): no mechanism protects it."""
    if not original.null_count:
        return released
    return pc.if_else(pc.is_null(original), pa.nulls(len(original), released.type), released)
