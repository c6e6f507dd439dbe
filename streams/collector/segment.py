"""Segment's HTTP Tracking API messages as eddyline events (``Mapping`` routes them).

Time, as Segment corrects it: a client's clock may be off, so the event's time is
``receivedAt - (sentAt - timestamp)`` (the batch's or the message's ``sentAt``; without one,
``timestamp`` as sent; without that, ``receivedAt``). ``event_id`` is a UUID derived from the
write key's name and the ``messageId``: a client that retries sends the same one.

Examples:
    >>> from datetime import UTC, datetime
    >>> received = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    >>> corrected_time({"timestamp": "2026-01-01T11:00:00Z"}, "2026-01-01T11:00:05Z", received)
    datetime.datetime(2026, 1, 1, 12, 0, 5, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from eddyline.schemas.deadletter import DeadLetter, Reason
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.source import SourceRef
from eddyline.streams.collector.mapping import Mapping, WriteKey

#: calls Segment defines that carry no event of ours: accepted and dropped (traits, groups
#: and aliases never pass the privacy boundary)
DROPPED_CALLS = frozenset({"identify", "alias", "group"})
CALLS = frozenset({"track", "page", "screen"}) | DROPPED_CALLS
ID_NAMESPACE = uuid.UUID("6f1e4a52-8c1d-4b7e-9a43-1d2f3c4b5a69")  # of event ids (UUID 5)
_MISSING = object()


class Converted(NamedTuple):
    """A message that became an event of ``model`` (not yet validated)."""

    model: type[BaseEvent]
    values: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    """A message that becomes no event: a reason code and a field (never a value)."""

    reason: Reason
    detail: str
    field: str | None = None

    def letter(self, source: SourceRef, place: int) -> DeadLetter:
        """The dead letter of the request's call at ``place``."""
        return DeadLetter(self.reason, self.detail, source, field=self.field, rows=str(place))


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time with a zone, or None (absent, not a string, or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def corrected_time(message: dict[str, Any], sent_at: Any, received_at: datetime) -> datetime:
    """The message's time with the client's clock skew taken out (module docstring).
    ``sent_at``: the batch's ``sentAt``, as sent or parsed (``parse_time``)."""
    stamped = parse_time(message.get("timestamp"))
    if stamped is None:
        return received_at
    sent = parse_time(message.get("sentAt")) or (
        sent_at if isinstance(sent_at, datetime) else parse_time(sent_at)
    )
    if sent is None:
        return stamped.astimezone(UTC)
    return (received_at - (sent - stamped)).astimezone(UTC)


def event_id(key: WriteKey, message_id: Any) -> str:
    """The same UUID (as text) for the same write key and ``messageId``: the UUID 5 of the
    name ``<key name>\\0<messageId>`` (``gather`` makes the same ids column-wise); a new
    one without an id."""
    if not isinstance(message_id, str) or not message_id:
        return str(uuid.uuid4())
    return str(uuid.uuid5(ID_NAMESPACE, f"{key.name}\x00{message_id}"))


def _path(message: dict[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = message
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return _MISSING if node is None else node


def convert(
    message: dict[str, Any],
    call: str,
    key: WriteKey,
    mapping: Mapping,
    sent_at: Any,
    received_at: datetime,
) -> Converted | Rejected | None:
    """The event a Segment message makes, why it makes none, or None for a call that is
    accepted and dropped (identify, alias, group)."""
    if call in DROPPED_CALLS:
        return None
    event = message.get("event") if call == "track" else None
    plan = mapping.plan(call, event if isinstance(event, str) else None)
    if plan is None:
        return Rejected(Reason.EVENT_UNMAPPED, f"no route for this {call} call")
    user = message.get("userId") or message.get("anonymousId")
    if isinstance(user, int | float) and not isinstance(user, bool):
        user = str(user)  # Segment accepts numeric ids
    if not isinstance(user, str) or not user:
        return Rejected(
            Reason.ROW_INVALID, "user_id: missing (no userId or anonymousId)", "user_id"
        )
    values: dict[str, Any] = {
        **plan.default,  # where no field is found (the collector's own names never are)
        "event_id": event_id(key, message.get("messageId")),
        "user_id": user,
        "occurred_at": corrected_time(message, sent_at, received_at),
        "app_id": key.app_id,
        **plan.constants,
    }
    for name, parts in plan.fields:
        found = _path(message, parts)
        if found is not _MISSING:
            values[name] = found
    return Converted(plan.model, values)
