"""A privacy policy built from a model's annotations, applied to an Arrow batch.

``apply`` is the privacy boundary: what it returns may be stored and learned from; nothing
it drops or replaces (raw ids, redacted text, exact values) leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from privacy.mechanisms import LaplaceMechanism, RandomizedResponseMechanism
from privacy.pseudonymize import HmacPseudonymizer
from schemas.annotations import Noise, Pseudonymize, RandomizedResponse, Redact
from schemas.errors import SchemaError
from schemas.events import BaseEvent


@dataclass(frozen=True)
class PrivacyPolicy:
    """How each field of one model crosses the boundary."""

    model: type[BaseEvent]
    pseudonymized: tuple[str, ...]
    redacted: tuple[str, ...]
    noised: tuple[tuple[str, LaplaceMechanism], ...]
    randomized: tuple[tuple[str, RandomizedResponseMechanism], ...] = ()

    @classmethod
    def for_model(cls, model: type[BaseEvent]) -> PrivacyPolicy:
        """Read the policy off ``model``'s annotations; fail now if one cannot apply."""
        pseud, redact, noise, rr = [], [], [], []
        for name, ann in model.privacy_fields().items():
            if isinstance(ann, Pseudonymize):
                pseud.append(name)
            elif isinstance(ann, Redact):
                redact.append(name)
            elif isinstance(ann, Noise):
                noise.append((name, LaplaceMechanism(ann.epsilon, ann.lower, ann.upper)))
            elif isinstance(ann, RandomizedResponse):
                rr.append((name, RandomizedResponseMechanism(ann.epsilon, ann.categories)))
            else:
                raise SchemaError(f"{model.__name__}.{name}: no mechanism for {ann!r}")
        return cls(model, tuple(pseud), tuple(redact), tuple(noise), tuple(rr))

    @property
    def mechanisms(self) -> list[LaplaceMechanism | RandomizedResponseMechanism]:
        """The mechanisms one event goes through: what the budget accounts for."""
        return [m for _, m in self.noised] + [m for _, m in self.randomized]

    def apply(
        self, table: pa.Table, pseudonymizer: HmacPseudonymizer, rng: np.random.Generator
    ) -> pa.Table:
        """The privatised batch: pseudonyms (+ key id), redactions dropped, numbers noised."""
        out = table.drop_columns(list(self.redacted))
        for name, mech in self.noised:
            values = out[name].to_numpy()
            idx = out.schema.get_field_index(name)
            out = out.set_column(idx, name, pa.array(mech.apply(values, rng), pa.float64()))
        for name, rrm in self.randomized:
            cats = pa.array(rrm.categories)
            idx = pc.index_in(out[name], value_set=cats).to_numpy(zero_copy_only=False)
            reported = pc.take(cats, pa.array(rrm.apply(idx, rng)))
            out = out.set_column(out.schema.get_field_index(name), name, reported)
        for name in self.pseudonymized:
            idx = out.schema.get_field_index(name)
            out = out.set_column(
                idx,
                f"{name[:-3] if name.endswith('_id') else name}_pid",
                pseudonymizer.apply(out[name]),
            )
        if self.pseudonymized:
            key_ids = pc.fill_null(pa.nulls(out.num_rows, pa.string()), pseudonymizer.key_id)
            out = out.append_column("key_id", key_ids)
        return out
