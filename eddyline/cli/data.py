"""``eddyline schemas``, ``query`` and ``demo``: contracts, the lake, the whole loop once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from eddyline.cli.common import app, err, out, schemas_app

ContractsDir = Annotated[Path | None, typer.Option("--dir", help="contracts folder")]


def _load_models(modules: list[str]) -> None:
    """Import the app's modules so their event models register themselves."""
    import importlib

    for module in modules:
        importlib.import_module(module)


@schemas_app.command("export")
def schemas_export(
    directory: ContractsDir = None,
    module: Annotated[list[str], typer.Option(help="module defining events")] = [],  # noqa: B006
) -> None:
    """Write a contract file for each registered event version that has none yet."""
    from eddyline.schemas import contracts

    _load_models(module)
    written = contracts.export(directory or contracts.CONTRACTS_DIR)
    for path in written:
        print(path)
    err.print(f"exported {len(written)} new contract(s)")


@schemas_app.command("check")
def schemas_check(
    directory: ContractsDir = None,
    module: Annotated[list[str], typer.Option(help="module defining events")] = [],  # noqa: B006
) -> None:
    """Fail (exit 1) if a published schema changed, is not exported, or breaks compatibility."""
    from eddyline.schemas import contracts

    _load_models(module)
    problems = contracts.check(directory or contracts.CONTRACTS_DIR)
    for problem in problems:
        print(problem)
    err.print(f"{len(problems)} problem(s)" if problems else "schemas are compatible")
    raise typer.Exit(1 if problems else 0)


@app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="DuckDB SQL; each table is a view named after it")],
    lake: Annotated[str, typer.Option(help="lake root")] = "./lake",
    version: Annotated[
        int | None, typer.Option("--version", help="read the tables as of this Delta version")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="read the tables as of this time (ISO 8601, e.g. 2026-12-01T10:00Z)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per row")] = False,
) -> None:
    """Run DuckDB SQL over the Delta tables, now or as of a version or a time (time travel)."""
    import json

    from eddyline.consumers.lake import Lake

    if version is not None and as_of is not None:
        raise typer.BadParameter("give --version or --as-of, not both")
    when: int | str | None = version if version is not None else as_of
    result = Lake(lake).sql(sql, as_of=when)
    if as_json:
        for row in result.to_pylist():
            print(json.dumps(row, default=str))
        return
    table = Table(*(escape(name) for name in result.column_names))
    for row in result.to_pylist():
        table.add_row(*(escape(str(v)) for v in row.values()))
    out.print(table)


@app.command("report")
def report(
    lake: Annotated[str, typer.Option(help="lake root")] = "./lake",
    out_file: Annotated[Path, typer.Option("--out", help="the HTML file to write")] = Path(
        "report.html"
    ),
) -> None:
    """One self-contained HTML report from the Delta tables: drift, calibration, budget,
    dead letters, rows per day, cost."""
    from eddyline.consumers.lake import Lake
    from eddyline.consumers.report import build_report

    with err.status("report") as status:
        written = build_report(
            Lake(lake),
            out_file,
            allowances=_allowances(),
            progress=lambda step: status.update(f"report: {step}"),
        )
    err.print(f"wrote {escape(str(written))} ({written.stat().st_size / 1e6:.1f} MB)")


def _allowances() -> dict[str, int]:
    """Events per user and window of each registered event type under the worker's budget
    settings (EDDYLINE_BUDGET_*), for the report's budget line; empty without the privacy
    code's extra."""
    try:
        from eddyline.privacy.accountant import allowance
        from eddyline.privacy.policy import PrivacyPolicy
        from eddyline.schemas.registry import REGISTRY
        from eddyline.streams.kafka.settings import WorkerSettings
    except ImportError:
        return {}
    ws = WorkerSettings()
    return {
        m.event_name: allowance(
            PrivacyPolicy.for_model(m).mechanisms, epsilon=ws.budget_epsilon, delta=ws.budget_delta
        )
        for m in REGISTRY.models()
    }


@app.command("demo")
def demo(
    events: Annotated[int, typer.Option(help="interaction events")] = 40_000,
    as_json: Annotated[bool, typer.Option("--json", help="the summary as one JSON object")] = False,
) -> None:
    """Broker + worker + simulated traffic with a drift; prints a summary that reconciles."""
    import json

    from eddyline.demo import run_demo

    r = run_demo(events, err)
    after = r.after_drift
    if as_json:
        summary_json = {
            "sent": r.sent,
            "sent_invalid": r.sent_invalid,
            "rows_in_delta": r.rows_in_delta,
            "deadlettered": r.deadlettered,
            "reconciles": r.reconciles,
            "drift_point": r.drift_point,
            "lake": r.lake,
            "drift_events": [d.model_dump(mode="json") for d in r.drifts],
        }
        print(json.dumps(summary_json))
        if not (r.reconciles and after):
            raise typer.Exit(1)
        return
    summary = Table("", "", title="eddyline demo")
    summary.add_row("events sent", f"{r.sent:,} ({r.sent_invalid} deliberately invalid)")
    summary.add_row("rows in Delta", f"{r.rows_in_delta:,}")
    summary.add_row("dead-lettered", f"{r.deadlettered:,}")
    summary.add_row("reconciles", "yes" if r.reconciles else "NO")
    summary.add_row(
        "drift events",
        f"{len(r.drifts)} ({len(after)} detected after the drift "
        f"injected at event {r.drift_point:,})",
    )
    summary.add_row("tables", f"{r.lake}/interaction, {r.lake}/feedback")
    summary.add_row(
        "query",
        f"eddyline query --lake {r.lake} 'SELECT action, count(*) FROM interaction GROUP BY 1'",  # noqa: S608 - a hint printed for the user, not executed
    )
    out.print(summary)
    for d in r.drifts:
        out.print(
            f"  drift: {d.model} {d.signal} {d.stat_before:.2f} -> {d.stat_after:.2f} "
            f"at {d.detected_at:%H:%M:%S}, {d.events_seen:,} events learned, "
            f"Delta version {d.lake_version}"
        )
    if not (r.reconciles and after):
        raise typer.Exit(1)
