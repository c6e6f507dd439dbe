"""The registry of event models, by ``name:version`` schema id.

Models register themselves when their class is defined (see ``BaseEvent``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from eddyline.schemas.errors import SchemaError, UnknownSchemaError

if TYPE_CHECKING:
    from eddyline.schemas.events import BaseEvent


class SchemaRegistry:
    """Event models by schema id, and the latest version of each event name."""

    def __init__(self) -> None:
        self._models: dict[str, type[BaseEvent]] = {}
        self._lock = threading.Lock()

    def register(self, model: type[BaseEvent]) -> None:
        """Register ``model`` under its schema id; a second, different model is an error."""
        schema_id = model.schema_id()
        with self._lock:
            known = self._models.get(schema_id)
            if known is not None and known.__qualname__ != model.__qualname__:
                raise SchemaError(
                    f"schema {schema_id!r} is already registered by {known.__qualname__}; "
                    "bump event_version for a new shape"
                )
            self._models[schema_id] = model

    def get(self, schema_id: str) -> type[BaseEvent]:
        """The model for ``schema_id``, or :class:`UnknownSchemaError`."""
        try:
            return self._models[schema_id]
        except KeyError:
            raise UnknownSchemaError(schema_id) from None

    def latest(self, event_name: str) -> type[BaseEvent]:
        """The highest registered version of ``event_name``."""
        versions = [m for m in self._models.values() if m.event_name == event_name]
        if not versions:
            raise UnknownSchemaError(f"{event_name}:*")
        return max(versions, key=lambda m: m.event_version)

    def models(self) -> list[type[BaseEvent]]:
        """Every registered model, by name then version."""
        return sorted(self._models.values(), key=lambda m: (m.event_name, m.event_version))

    def names(self) -> list[str]:
        """Every registered event name, sorted."""
        return sorted({m.event_name for m in self._models.values()})


REGISTRY = SchemaRegistry()
