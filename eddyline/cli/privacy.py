"""``eddyline budget`` and ``keys``: what a user has spent, and pseudonym key rotation."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from eddyline.cli.common import app, budget_app, err, keys_app, out
from eddyline.schemas.errors import EddylineError
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings


@budget_app.command("show")
def budget_show(
    user: Annotated[str, typer.Argument(help="the app's user id (or a pseudonym, with --pid)")],
    pid: Annotated[bool, typer.Option(help="USER is already a pseudonym")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """What one user has spent of the privacy budget, per stream and window.

    The user id is pseudonymised here with the worker's keys (every key of the keyring), so
    this needs the same EDDYLINE_PSEUDONYM_* settings and state folder as the workers."""
    import numpy as np

    from eddyline.privacy.accountant import composed_epsilon
    from eddyline.schemas.registry import REGISTRY
    from eddyline.streams.worker.budget_state import read_ledger
    from eddyline.streams.worker.privatizer import Privatizer, pseudonymizer_from_settings

    ws, ks = WorkerSettings(), KafkaSettings()
    pseudonymizer = pseudonymizer_from_settings(ws)
    pids = (
        {user: "-"}
        if pid
        else {pseudonymizer.one(user, i): k.key_id for i, k in enumerate(pseudonymizer.keys)}
    )
    budget = (ws.budget_epsilon, ws.budget_delta, ws.budget_window_s)
    privatizer = Privatizer(pseudonymizer, np.random.default_rng(), budget=budget)
    rows = []
    for entry in read_ledger(ws, ks):
        if entry.user_pid not in pids:
            continue
        policy = privatizer.policy(REGISTRY.latest(entry.stream))
        limit = privatizer.allowance(policy.model)
        for window, count in sorted(entry.windows.items()):
            start = window * ws.budget_window_s
            rows.append(
                {
                    "stream": entry.stream,
                    "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
                    "user_pid": entry.user_pid,
                    "key_id": pids[entry.user_pid],
                    "events": count,
                    "allowance": limit,
                    "epsilon_spent": round(
                        composed_epsilon(policy.mechanisms, count, ws.budget_delta), 4
                    ),
                    "epsilon_budget": ws.budget_epsilon,
                    "delta": ws.budget_delta,
                }
            )
    if not rows:
        err.print("no budget spent by this user in any live window")
        raise typer.Exit(1)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@keys_app.command("add")
def keys_add(
    key_id: Annotated[str, typer.Argument(help="the new key's id, e.g. k2")],
    start: Annotated[
        str, typer.Option("--from", help="UTC date the key takes over (a window boundary)")
    ],
) -> None:
    """Add a random pseudonym key to the keyring, taking over from ``--from`` (rotation).

    Pseudonyms stay joinable within each key's lifetime; events from ``--from`` on get the
    new key's pseudonyms. Every worker must read the same keyring file."""
    from eddyline.privacy.pseudonymize import add_key

    ws = WorkerSettings()
    if ws.pseudonym_keyring is None:
        raise EddylineError("set EDDYLINE_PSEUDONYM_KEYRING to the keyring file's path")
    at = datetime.fromisoformat(start)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    if int(at.timestamp()) % ws.budget_window_s:
        raise EddylineError(
            f"--from {start}: a key must start on a budget-window boundary "
            f"(a multiple of {ws.budget_window_s} s; UTC midnight for daily windows)"
        )
    try:
        add_key(ws.pseudonym_keyring, key_id, at)
    except ValueError as exc:
        raise EddylineError(str(exc)) from None
    err.print(f"added key {key_id!r} from {at.isoformat()} to {ws.pseudonym_keyring}")


@app.command("forget")
def forget(
    user: Annotated[str, typer.Argument(help="the app's user id to forget")],
    scope: Annotated[
        str, typer.Option(help="forget (everything), store or learn (withdraw that consent)")
    ] = "forget",
    request_id: Annotated[str | None, typer.Option(help="default: one per user and scope")] = None,
    vacuum_now: Annotated[
        bool, typer.Option(help="remove the old files now (older versions become unreadable)")
    ] = False,
    settle_s: Annotated[float, typer.Option(help="wait for every worker to have it")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Forget a user (GDPR art. 17), or withdraw their consent for storage or learning.

    Idempotent and resumable: run it again after a crash, with the same arguments, to finish
    (docs/governance.md). Needs the workers' EDDYLINE_* settings (keys, lake, Kafka)."""
    from eddyline.streams.worker.governance import Governance

    if scope not in ("forget", "store", "learn"):
        raise EddylineError(f"--scope {scope!r}: one of forget, store, learn")
    gov = Governance(WorkerSettings(), KafkaSettings(), settle_s=settle_s)
    with err.status(f"{scope}: suppressing, deleting, logging..."):
        row = gov.forget(
            user,
            scope=scope,  # type: ignore[arg-type]  # checked above
            request_id=request_id,
            requested_by=os.environ.get("USER", "cli"),
            vacuum_now=vacuum_now,
        )
    if as_json:
        print(json.dumps(row, default=str))
        return
    err.print(
        f"{row['action']} {row['request_id']}: {row['rows_removed']} rows removed "
        f"({row['tables']}); files gone by {row['removed_from_storage_by']}"
    )
