"""The Delta contracts of the tables the worker writes besides the event tables: drift
events (``drift_events``), model events (``model_metrics``) and cost samples
(``worker_costs``). Dead letters have theirs in
``schemas.deadletter``. Readers (``consumers``) and the worker share them from here.
"""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa

DRIFT_SCHEMA = pa.schema(
    [
        ("drift_id", pa.string()),
        ("idempotency_key", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.int64()),
        ("stream", pa.string()),
        ("signal", pa.string()),
        ("feature", pa.string()),
        ("detector", pa.string()),
        ("severity", pa.float64()),
        ("stat_before", pa.float64()),
        ("stat_after", pa.float64()),
        ("events_seen", pa.int64()),
        ("offsets_after", pa.string()),
        ("lake_version", pa.int64()),
        ("lake_version_before", pa.int64()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)


def drift_table(events: list[bytes]) -> pa.Table:
    """Drift events (their JSON) as rows of the ``drift_events`` table: ``occurred_at`` is
    when the change was detected; ``offsets_after`` is kept as JSON text."""
    rows = []
    for raw in events:
        d = json.loads(raw)
        d["offsets_after"] = json.dumps(d.get("offsets_after", {}))
        d["occurred_at"] = datetime.fromisoformat(d.pop("detected_at"))
        rows.append({name: d.get(name) for name in DRIFT_SCHEMA.names})
    return pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA)


MODEL_METRICS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("model_version", pa.int64()),
        ("kind", pa.string()),
        ("checkpoint", pa.int64()),
        ("events_seen", pa.int64()),
        ("error_rate", pa.float64()),
        ("accuracy", pa.float64()),
        ("log_loss", pa.float64()),
        ("window_events", pa.int64()),
        ("brier", pa.float64()),  # added with learner specs: older tables merge it in
        ("calibration", pa.string()),  # JSON [[count, mean predicted, observed rate], ...]
        ("mae", pa.float64()),  # regression specs (added with them: older tables merge them in)
        ("rmse", pa.float64()),
        ("alias", pa.string()),
        ("previous_version", pa.int64()),
        ("reason", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)


def model_metrics_table(events: list[bytes]) -> pa.Table:
    """Model events (their JSON) as rows of the ``model_metrics`` table: each online
    checkpoint's rolling metrics, and each registry change (``kind``)."""
    rows = []
    for raw in events:
        d = json.loads(raw)
        m = d.get("metrics") or {}
        rows.append(
            {
                "model": d["model"],
                "model_version": d["model_version"],
                "kind": d.get("kind", "checkpoint"),
                "checkpoint": d.get("checkpoint"),
                "events_seen": d.get("events_seen"),
                "error_rate": m.get("error_rate", d.get("error_rate")),
                "accuracy": m.get("accuracy"),
                "log_loss": m.get("log_loss"),
                "window_events": int(m["events"]) if "events" in m else None,
                "brier": m.get("brier"),
                "calibration": json.dumps(d["calibration"]) if d.get("calibration") else None,
                "mae": m.get("mae"),
                "rmse": m.get("rmse"),
                "alias": d.get("alias"),
                "previous_version": d.get("previous_version"),
                "reason": d.get("reason"),
                "occurred_at": datetime.fromisoformat(d["created_at"]),
            }
        )
    return pa.Table.from_pylist(rows, schema=MODEL_METRICS_SCHEMA)


COSTS_SCHEMA = pa.schema(
    [
        ("worker", pa.string()),  # a random id per worker process (no host name)
        ("stage", pa.string()),  # privatize, lake, learn, predict
        ("cpu_seconds", pa.float64()),  # since the worker started (a counter)
        ("rows", pa.int64()),  # rows (predictions for predict) since the worker started
        ("price_per_core_hour", pa.float64()),
        ("active_users", pa.int64()),  # users charged in the current budget window
        ("window_events", pa.int64()),  # events charged in that window
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)


def costs_table(samples: list[bytes]) -> pa.Table:
    """Cost samples (their JSON: ``{"worker", "price_per_core_hour", "active_users",
    "window_events", "at", "stages": {stage: [cpu_seconds, rows]}}``) as rows of the
    ``worker_costs`` table, one per stage."""
    rows = []
    for raw in samples:
        d = json.loads(raw)
        at = datetime.fromisoformat(d["at"])
        for stage, (seconds, count) in sorted(d["stages"].items()):
            rows.append(
                {
                    "worker": d["worker"],
                    "stage": stage,
                    "cpu_seconds": seconds,
                    "rows": int(count),
                    "price_per_core_hour": d["price_per_core_hour"],
                    "active_users": d["active_users"],
                    "window_events": d["window_events"],
                    "occurred_at": at,
                }
            )
    return pa.Table.from_pylist(rows, schema=COSTS_SCHEMA)


GOVERNANCE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("subject", pa.string()),  # HMAC of the raw id (privacy/governance.py), never the id
        ("action", pa.string()),  # forget, withdraw_store, withdraw_learn, retention
        ("tables", pa.string()),  # JSON: table -> {"version_before", "version_after", "rows"}
        ("rows_removed", pa.int64()),
        ("requested_at", pa.timestamp("us", tz="UTC")),
        ("done_at", pa.timestamp("us", tz="UTC")),
        ("requested_by", pa.string()),
        # when the removed rows' files are gone from storage too (vacuum), at the latest
        ("removed_from_storage_by", pa.timestamp("us", tz="UTC")),
        ("detail", pa.string()),
    ]
)


def governance_row(**fields: object) -> pa.Table:
    """One row of the ``governance_log`` table."""
    return pa.Table.from_pylist(
        [{name: fields.get(name) for name in GOVERNANCE_SCHEMA.names}], schema=GOVERNANCE_SCHEMA
    )
