"""The collector's configuration: write keys, and how Segment calls become eddyline events.

A YAML file (``EDDYLINE_COLLECTOR_MAPPING``; the shipped ``default.yaml`` maps Segment's
e-commerce spec onto ``interaction`` and ``feedback``), validated at start-up like learner
specs: every stream must be a registered event type, every mapped field one of its fields.

.. code-block:: yaml

    write_keys:
      - name: shop-web            # the label in metrics and dead letters (never the key)
        key: env:SHOP_WRITE_KEY   # or the key itself
        app_id: shop              # the events' app_id
        origins: [https://shop.example]   # CORS allowlist for browsers
        rate_per_s: 2000          # events per second, with a burst of twice that
    routes:
      - call: track               # track, page or screen
        event: Product Clicked    # track only: the event name (omit: any name)
        stream: interaction
        set: {action: click}      # constant fields
        fields:                   # field -> dot path in the Segment message
          item_id: properties.product_id
          item_category: properties.category
        default: {dwell_time_s: 0.0}   # when the path is absent

``user_id`` is the message's ``userId`` (else ``anonymousId``), ``event_id`` a UUID derived
from the write key's name and the ``messageId`` (a retry is the same event), ``occurred_at``
the clock-corrected timestamp, ``app_id`` the write key's. Nothing else reaches the event:
traits, IP addresses, user agents and unmapped properties are dropped here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from eddyline.schemas.errors import UserError
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.registry import REGISTRY

DEFAULT_MAPPING = Path(__file__).with_name("default.yaml")
#: fields the collector fills itself: a route may not map them
_OWN = {"event_id", "user_id", "occurred_at", "app_id"}


class MappingError(UserError):
    """The collector's mapping file is missing or invalid (names the file and the problem)."""


class WriteKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: SecretStr
    app_id: str = Field(min_length=1, max_length=128)
    origins: list[str] = Field(default_factory=list)
    rate_per_s: float = Field(default=5_000.0, gt=0)

    @model_validator(mode="after")
    def _resolve(self) -> WriteKey:
        raw = self.key.get_secret_value()
        if raw.startswith("env:"):
            value = os.environ.get(raw[4:], "")
            if not value:
                raise ValueError(f"write key {self.name!r}: ${raw[4:]} is not set")
            object.__setattr__(self, "key", SecretStr(value))
        return self


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    call: Literal["track", "page", "screen"]
    event: str | None = None
    stream: str
    constants: dict[str, Any] = Field(default_factory=dict, alias="set")
    fields: dict[str, str] = Field(default_factory=dict)
    default: dict[str, Any] = Field(default_factory=dict)

    @property
    def model(self) -> type[BaseEvent]:
        return REGISTRY.latest(self.stream)


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    write_keys: list[WriteKey] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    _plans: dict[tuple[str, str | None], RoutePlan | None] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Mapping:
        names = [k.name for k in self.write_keys]
        if len(set(names)) != len(names):
            raise ValueError("write key names repeat")
        known = {m.event_name for m in REGISTRY.models()}
        for i, route in enumerate(self.routes):
            where = f"routes[{i}] ({route.call} {route.event or '*'})"
            if route.stream not in known:
                raise ValueError(f"{where}: no stream {route.stream!r} (known: {sorted(known)})")
            if route.event is not None and route.call != "track":
                raise ValueError(f"{where}: only track calls have event names")
            fields = set(route.model.model_fields)
            for name in [*route.constants, *route.fields, *route.default]:
                if name in _OWN:
                    raise ValueError(f"{where}: {name} is set by the collector")
                if name not in fields:
                    raise ValueError(f"{where}: {route.stream} has no field {name!r}")
        return self

    def key_of(self, secret: str) -> WriteKey | None:
        """The write key with this secret, if any."""
        for key in self.write_keys:
            if key.key.get_secret_value() == secret:
                return key
        return None

    def route(self, call: str, event: str | None) -> Route | None:
        """The first route for a call (and, for track, its event name)."""
        for route in self.routes:
            if route.call == call and (route.event is None or route.event == event):
                return route
        return None

    def plan(self, call: str, event: str | None) -> RoutePlan | None:
        """``route``'s answer made ready for the hot path (its model looked up, its paths
        split), remembered per (call, event name); event names are the client's, so at
        most ``_MAX_PLANS`` are remembered."""
        key = (call, event)
        try:
            return self._plans[key]
        except KeyError:
            pass
        route = self.route(call, event)
        found = None
        if route is not None:
            fields = tuple((name, tuple(path.split("."))) for name, path in route.fields.items())
            found = RoutePlan(route.model, fields, dict(route.constants), dict(route.default))
        if len(self._plans) < _MAX_PLANS:
            self._plans[key] = found
        return found


@dataclass(frozen=True)
class RoutePlan:
    """A route as the collector applies it to each message."""

    model: type[BaseEvent]
    fields: tuple[tuple[str, tuple[str, ...]], ...]  # (event field, path split at dots)
    constants: dict[str, Any]
    default: dict[str, Any]


_MAX_PLANS = 10_000


def load_mapping(path: str | Path | None = None) -> Mapping:
    """The mapping at ``path`` (default: the shipped one), validated."""
    where = Path(path) if path else DEFAULT_MAPPING
    try:
        data = yaml.safe_load(where.read_text())
        return Mapping.model_validate(data)
    except OSError as exc:
        raise MappingError(f"cannot read the collector mapping {where}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{where} is not YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise MappingError(f"{where}: {at + ': ' if at else ''}{first['msg']}") from None
