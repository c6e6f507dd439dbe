"""``eddyline report``: one self-contained HTML file from the Delta tables.

Sections: each model's error over time with its drift events (the error before and after
each change), its reliability diagram and prediction distribution (the latest checkpoint's
calibration bins), rows per day per table, dead letters by reason, budget use (events
stored per user and day against the allowance) and cost (``worker_costs``: CPU per stage,
priced). Figures are Plotly's, with plotly.js inlined once: the file opens offline.

Everything in it is an aggregate: no user pseudonym, value or event id is written.

Usage (a lake is needed, so this is not a doctest; tests/integration/test_pages.py runs
it)::

    build_report(Lake("./lake"), Path("report.html"))  # -> Path("report.html")
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eddyline.schemas.errors import require_extra

require_extra("query", "eddyline.consumers.report", "plotly", "duckdb", "polars")

import plotly.graph_objects as go  # noqa: E402  # after the check: its error names the extra

from eddyline.consumers.lake import Lake, LakeError  # noqa: E402

_SECTIONS = ("models", "rows", "deadletters", "budget", "cost")
# Marks each figure with the points Plotly drew once the page has rendered (the tests and a
# reader's browser console can check that no chart is empty).
_COUNT_POINTS = """
<script>
window.addEventListener("load", () => {
  for (const gd of document.querySelectorAll(".js-plotly-plot")) {
    const points = (gd._fullData || []).reduce((n, t) => n + ((t.x || t.values || []).length), 0);
    const drawn = gd.querySelectorAll(".scatterlayer .trace, .barlayer .trace").length;
    gd.closest("figure").dataset.points = String(points);
    gd.closest("figure").dataset.drawn = String(drawn);
  }
});
</script>
"""


class Report:
    """Collects figures and tables, then writes them as one HTML page."""

    def __init__(self, title: str) -> None:
        self.title, self.figures = title, 0
        self.parts: list[str] = []

    def heading(self, text: str, intro: str = "") -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        if intro:
            self.parts.append(f"<p>{html.escape(intro)}</p>")

    def figure(self, fig: go.Figure, caption: str) -> None:
        fig.update_layout(height=340, margin={"l": 60, "r": 20, "t": 30, "b": 50})
        body = fig.to_html(
            full_html=False,
            include_plotlyjs="inline" if self.figures == 0 else False,
            config={"displaylogo": False, "responsive": True},
        )
        self.figures += 1
        self.parts.append(
            f'<figure class="chart" data-points="0"><figcaption>{html.escape(caption)}'
            f"</figcaption>{body}</figure>"
        )

    def table(self, headers: list[str], rows: list[list[Any]], caption: str) -> None:
        head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self.parts.append(
            f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="empty">{html.escape(text)}</p>')

    def html(self) -> str:
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><p>Made {made} from the Delta tables.</p>"
            + "".join(self.parts)
            + _COUNT_POINTS
            + "</body></html>"
        )


_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:0 2rem 2rem;color:#1b1f24}"
    "h2{border-bottom:1px solid #d0d7de;margin-top:2rem}figure{margin:1rem 0}"
    "figcaption,caption{font-weight:600;text-align:left;margin:.3rem 0}"
    "table{border-collapse:collapse;margin:1rem 0}th,td{border-bottom:1px solid #d0d7de;"
    "padding:.15rem .7rem;text-align:left}.empty{color:#57606a;font-style:italic}"
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.6g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def build_report(
    lake: Lake,
    out: Path,
    *,
    allowances: dict[str, int] | None = None,
    progress: Callable[[str], None] = lambda step: None,
) -> Path:
    """Write the report of ``lake`` to ``out``; ``allowances`` (table -> events per user per
    window) draws the budget line; ``progress`` hears each section's name as it starts."""
    tables = set(lake.tables())
    if not tables:
        raise LakeError(f"no Delta tables under {lake.root} (is --lake the worker's lake path?)")
    report = Report(f"eddyline report: {lake.root}")
    for section in _SECTIONS:
        progress(section)
        _BUILDERS[section](lake, tables, report, allowances or {})
    out.write_text(report.html(), encoding="utf-8")
    return out


def _models(lake: Lake, tables: set[str], r: Report, allowances: dict[str, int]) -> None:
    r.heading(
        "Models",
        "Each online model's rolling error (predict, then learn) at every checkpoint; each "
        "drift event is drawn from the error before the change to the error after it.",
    )
    if "model_metrics" not in tables:
        r.note("No model_metrics table yet: no model has checkpointed.")
        return
    rows = lake.sql(
        "SELECT model, occurred_at, error_rate, log_loss, calibration FROM model_metrics "
        "WHERE kind = 'checkpoint' ORDER BY occurred_at"
    ).to_pylist()
    drift = (
        lake.sql("SELECT * FROM drift_events ORDER BY occurred_at").to_pylist()
        if "drift_events" in tables
        else []
    )
    for model in sorted({row["model"] for row in rows}):
        mine = [row for row in rows if row["model"] == model]
        fig = go.Figure()
        fig.add_scatter(
            x=[row["occurred_at"] for row in mine],
            y=[row["error_rate"] for row in mine],
            mode="lines+markers",
            name="error rate",
        )
        changes = [d for d in drift if d["model"] == model]
        for d in changes:
            fig.add_scatter(
                x=[d["occurred_at"], d["occurred_at"]],
                y=[d["stat_before"], d["stat_after"]],
                mode="lines+markers",
                line={"color": "#cf222e", "dash": "dash"},
                name=f"drift ({d['signal']})",
                showlegend=d is changes[0],
            )
        fig.update_layout(xaxis_title="time", yaxis_title="error rate")
        r.figure(fig, f"{model}: error rate over time, drift events dashed ({len(changes)})")
        r.table(
            ["detected", "signal", "feature", "before", "after", "Delta version before"],
            [
                [
                    f"{d['occurred_at']:%Y-%m-%d %H:%M:%S}",
                    d["signal"],
                    d["feature"],
                    d["stat_before"],
                    d["stat_after"],
                    d["lake_version_before"],
                ]
                for d in changes
            ],
            f"{model}: drift events",
        )
        saved = [row["calibration"] for row in mine if row.get("calibration")]
        bins: list[list[float]] = json.loads(saved[-1]) if saved else []
        if not bins:
            r.note(f"{model}: no calibration recorded yet.")
            continue
        centres = [(i + 0.5) / len(bins) for i in range(len(bins))]
        filled = [(b[1], b[2]) for b in bins if b[0] > 0]
        fig = go.Figure()
        fig.add_scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfectly calibrated",
            line={"color": "#8c959f", "dash": "dot"},
        )
        fig.add_scatter(
            x=[p for p, _ in filled],
            y=[o for _, o in filled],
            mode="lines+markers",
            name="observed",
        )
        fig.update_layout(
            xaxis_title="mean predicted probability",
            yaxis_title="observed rate",
            xaxis_range=[0, 1],
            yaxis_range=[0, 1],
        )
        r.figure(fig, f"{model}: reliability diagram (latest checkpoint's window)")
        fig = go.Figure(go.Bar(x=centres, y=[b[0] for b in bins], name="predictions"))
        fig.update_layout(xaxis_title="predicted probability", yaxis_title="events")
        r.figure(fig, f"{model}: prediction distribution (latest checkpoint's window)")


def _rows(lake: Lake, tables: set[str], r: Report, allowances: dict[str, int]) -> None:
    r.heading("Rows per day", "Rows stored per table and event date.")
    fig, total = go.Figure(), 0
    for table in _event_tables(lake, tables):
        per_day = lake.sql(
            f"SELECT event_date, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1"  # noqa: S608 - a table name from the lake's own listing
        ).to_pylist()
        fig.add_bar(x=[d["event_date"] for d in per_day], y=[d["n"] for d in per_day], name=table)
        total += sum(d["n"] for d in per_day)
    if not total:
        r.note("No event rows yet.")
        return
    fig.update_layout(barmode="group", xaxis_title="event date", yaxis_title="rows")
    r.figure(fig, f"Rows per day ({total:,} in all)")


def _deadletters(lake: Lake, tables: set[str], r: Report, allowances: dict[str, int]) -> None:
    r.heading("Dead letters", "Events rejected, by reason code (never their values).")
    if "deadletters" not in tables:
        r.note("No dead letters: every message was valid.")
        return
    rows = lake.sql(
        "SELECT reason, sum(count)::BIGINT AS events, count(*) AS entries FROM deadletters "
        "GROUP BY 1 ORDER BY 2 DESC"
    ).to_pylist()
    fig = go.Figure(go.Bar(x=[d["reason"] for d in rows], y=[d["events"] for d in rows]))
    fig.update_layout(xaxis_title="reason", yaxis_title="events")
    r.figure(fig, "Dead-lettered events by reason")
    r.table(["reason", "events", "entries"], [list(d.values()) for d in rows], "Dead letters")


def _budget(lake: Lake, tables: set[str], r: Report, allowances: dict[str, int]) -> None:
    r.heading(
        "Privacy budget",
        "Users by events stored per user and day, against each type's allowance per window "
        "(the worker charges by its clock's window; the event date approximates it). Rows "
        "past an allowance were withheld or coarsened, so none stands beyond it.",
    )
    fig, any_rows, notes = go.Figure(), False, []
    for table in sorted(_event_tables(lake, tables)):
        counts = lake.sql(
            f"SELECT n, count(*) AS users FROM (SELECT user_pid, event_date, count(*) AS n "  # noqa: S608 - a table name from the lake's own listing
            f"FROM {table} GROUP BY 1, 2) GROUP BY 1 ORDER BY 1"
        ).to_pylist()
        fig.add_bar(x=[c["n"] for c in counts], y=[c["users"] for c in counts], name=table)
        any_rows = any_rows or bool(counts)
        most = max((c["n"] for c in counts), default=0)
        if table in allowances and allowances[table] >= 2**62:  # the accountant's "no limit"
            notes.append(f"{table}: no per-user limit (none of its fields spends budget)")
        elif table in allowances and allowances[table] > 10 * max(most, 1):
            notes.append(f"{table}: allowance {allowances[table]:,} events, far beyond use")
        elif table in allowances:
            fig.add_vline(
                x=allowances[table],
                line_dash="dash",
                annotation_text=f"{table} allowance {allowances[table]}",
            )
    if not any_rows:
        r.note("No event rows yet.")
        return
    fig.update_layout(
        barmode="group", xaxis_title="events per user and day", yaxis_title="users (user-days)"
    )
    r.figure(fig, "Budget use: events per user and day")
    for note in notes:
        r.note(note)


def _cost(lake: Lake, tables: set[str], r: Report, allowances: dict[str, int]) -> None:
    r.heading(
        "Cost",
        "CPU seconds each stage spent (the worker's own thread time, summed over workers) "
        "per 1,000 rows it handled, priced at each worker's price per core-hour.",
    )
    if "worker_costs" not in tables:
        r.note("No worker_costs table yet: a worker publishes its first sample after a minute.")
        return
    latest = lake.sql(
        "SELECT stage, sum(cpu_seconds) AS cpu, sum(rows)::BIGINT AS n, "
        "max(price_per_core_hour) AS price FROM (SELECT * FROM worker_costs QUALIFY "
        "row_number() OVER (PARTITION BY worker, stage ORDER BY occurred_at DESC) = 1) "
        "GROUP BY 1 ORDER BY 1"
    ).to_pylist()
    rows = [
        [
            d["stage"],
            d["cpu"],
            d["n"],
            d["cpu"] / d["n"] * 1000 if d["n"] else None,
            d["cpu"] / d["n"] * 1e6 / 3600 * d["price"] if d["n"] else None,
        ]
        for d in latest
    ]
    fig = go.Figure(go.Bar(x=[row[0] for row in rows], y=[row[3] for row in rows]))
    fig.update_layout(xaxis_title="stage", yaxis_title="CPU s per 1,000 rows")
    r.figure(fig, "CPU seconds per 1,000 rows (per prediction × 1,000 for predict), by stage")
    r.table(["stage", "CPU s", "rows", "CPU s per 1,000", "cost per million"], rows, "Cost")
    users = lake.sql(
        "SELECT max(active_users) AS users, max(window_events) AS events FROM worker_costs "
        "WHERE occurred_at = (SELECT max(occurred_at) FROM worker_costs)"
    ).to_pylist()[0]
    data = [row[4] for row in rows if row[0] != "predict" and row[4] is not None]
    if users["users"]:
        per_user = sum(data) / 1e6 * users["events"] / users["users"]
        r.note(
            f"Cost per active user in the latest budget window: {per_user:.3g} "
            f"({users['users']:,} users, {users['events']:,} events charged)."
        )


def _event_tables(lake: Lake, tables: set[str]) -> list[str]:
    """The tables of event streams (those with pseudonymous users)."""
    return [
        t
        for t in sorted(tables)
        if "user_pid" in lake.sql(f"SELECT * FROM {t} LIMIT 0").column_names  # noqa: S608 - a table name from the lake's own listing
    ]


_BUILDERS: dict[str, Callable[[Lake, set[str], Report, dict[str, int]], None]] = {
    "models": _models,
    "rows": _rows,
    "deadletters": _deadletters,
    "budget": _budget,
    "cost": _cost,
}
