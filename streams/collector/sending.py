"""How the collector hands events to the SDK: a request's rows of one stream as columns in
one ``emit_many`` call (all or none, ~1-2 µs an event), falling back to ``emit`` row by row
only when one of them is invalid, so that the invalid ones are dead-lettered (with field
and rule, never a value) and the rest are taken."""

from __future__ import annotations

from typing import Any

from eddyline.schemas.deadletter import DeadLetter, Reason
from eddyline.schemas.errors import EventValidationError
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.source import SourceRef
from eddyline.streams.collector.limits import HttpError
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.sdk.spool import SpoolFullError

FULL = "the collector's spool is full"


def emit_rows(
    producer: EventProducer,
    model: type[BaseEvent],
    rows: list[tuple[int, dict[str, Any]]],
    source: SourceRef,
    dead: list[DeadLetter],
) -> int:
    """Emit ``rows`` (index in the request, values) of ``model``; return how many were
    taken, appending a dead letter to ``dead`` for each invalid one."""
    try:
        return producer.emit_many(model, rows_as_columns(rows))
    except EventValidationError:
        pass  # nothing of the batch was taken: find the invalid rows one by one
    except SpoolFullError as exc:
        raise HttpError(503, "spool_full", FULL, retry_after=exc.retry_after or 5) from None
    taken = 0
    for i, values in rows:
        try:
            producer.emit(values, schema=model)
            taken += 1
        except EventValidationError as exc:
            why = f"{exc.field}: {exc.reason}"
            dead.append(
                DeadLetter(Reason.ROW_INVALID, why, source, model.schema_id(), exc.field, f"{i}")
            )
        except SpoolFullError as exc:
            raise HttpError(503, "spool_full", FULL, retry_after=exc.retry_after or 5) from None
    return taken


def rows_as_columns(rows: list[tuple[int, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Converted rows (index in the request, values) as columns for ``emit_many``."""
    names = {name for _, values in rows for name in values}
    return {n: [v.get(n) for _, v in rows] for n in names}


def rows_to_columns(rows: list[Any], app_id: str) -> dict[str, list[Any]]:
    """JSON events (dicts) as columns for ``emit_many``; ``app_id`` where one has none."""
    if not all(isinstance(r, dict) for r in rows):
        raise HttpError(400, "bad_request", "each event must be a JSON object")
    names = sorted({name for r in rows for name in r} | {"app_id"})
    return {n: [r.get(n, app_id) if n == "app_id" else r.get(n) for r in rows] for n in names}
