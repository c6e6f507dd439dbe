"""``eddyline learners`` and ``retrain``: the online models and the retraining job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from eddyline.cli.common import err, learners_app, out, retrain_app
from eddyline.schemas.errors import EddylineError
from eddyline.schemas.storage import is_remote
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings


@retrain_app.command("run")
def retrain_run(
    lake: Annotated[str, typer.Option(help="lake root")] = "./lake",
    registry: Annotated[str, typer.Option(help="registry root")] = "./lake/_registry",
    epsilon: Annotated[float, typer.Option(help="ε per training run (Opacus target)")] = 2.0,
    delta: Annotated[float, typer.Option(help="δ per training run")] = 1e-5,
    total_epsilon: Annotated[
        float, typer.Option(help="ε over every run on the same data; refuses past it")
    ] = 10.0,
    min_rows: Annotated[int, typer.Option(help="post-change rows needed")] = 2_000,
) -> None:
    """Retrain on drift events, shadow the challenger on live traffic, promote or roll back.

    Runs until Ctrl-C / SIGTERM. Registry changes go to signals.models as ModelEvents."""
    import signal
    import threading

    try:
        from eddyline.consumers.retrain import TrainConfig, run_service
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EddylineError(f"{exc}: install the [retrain] extra") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    err.print(
        f"retraining on drift: lake {lake}, registry {registry}, "
        f"ε {epsilon} per run, {total_epsilon} in all"
    )
    try:
        run_service(
            lake,
            registry,
            kafka=KafkaSettings(),
            config=TrainConfig(epsilon=epsilon, delta=delta),
            total_epsilon=total_epsilon,
            min_rows=min_rows,
            stop=stop,
            # beside a local registry; for one on an object store, in the working folder
            handled_path=(Path(".eddyline") / "retrain" if is_remote(registry) else Path(registry))
            / "handled_drift_keys.txt",
        )
    except KeyboardInterrupt:
        stop.set()


@retrain_app.command("status")
def retrain_status(
    model: str = "click",
    registry: Annotated[str, typer.Option(help="registry root")] = "./lake/_registry",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per version")] = False,
) -> None:
    """Registered versions of a model: metrics, ε spent, lineage, and where the aliases point."""
    from eddyline.online_learning.registry import ModelRegistry

    reg = ModelRegistry(registry)
    aliases = {a: reg.alias(model, a) for a in ("champion", "challenger", "previous")}
    rows = [
        {
            "version": v.version,
            "aliases": [a for a, n in aliases.items() if n == v.version],
            # the spec kind's loss (log-loss, squared error, cross-entropy); older versions
            # recorded their log-loss only
            "holdout_loss": v.metrics.get(
                "holdout_loss", v.metrics.get("holdout_log_loss", float("nan"))
            ),
            "epsilon": v.epsilon,
            "drift": v.drift_key or "bootstrap",
            "trained_on": v.lineage.get("trained_on", {}),
        }
        for v in reg.versions(model)
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
        return
    table = Table("version", "aliases", "holdout loss", "ε", "drift", "trained on")
    for row in rows:
        table.add_row(
            str(row["version"]),
            ", ".join(row["aliases"]),
            f"{row['holdout_loss']:.4f}",
            f"{row['epsilon']:.3f}",
            escape(str(row["drift"])),
            escape(json.dumps(row["trained_on"], default=str)),
        )
    out.print(table)


@learners_app.command("check")
def learners_check(
    specs: Annotated[
        list[str] | None,
        typer.Argument(help="built-in names or YAML files; default: EDDYLINE_LEARNERS"),
    ] = None,
    module: Annotated[
        list[str] | None,
        typer.Option(
            help="an event module (module name or .py file) defining the specs' event types; "
            "repeatable; default: EDDYLINE_EVENT_MODULES"
        ),
    ] = None,
) -> None:
    """Load and check learner specs as the worker would; exit 2 naming the first problem."""
    from eddyline.online_learning.spec import load_specs
    from eddyline.schemas.streams import load_event_modules

    ws = WorkerSettings()
    load_event_modules(module or ws.event_modules)
    loaded = load_specs(specs or ws.learners)
    for spec in loaded:
        features = ", ".join(f"{f.column} ({f.kind})" for f in spec.features)
        watchers = ", ".join(w.key for w in spec.drift.watch) or "none"
        out.print(
            f"[bold]{escape(spec.name)}[/bold] v{spec.version} ({spec.kind}) over {spec.stream}: "
            f"{escape(spec.description)}\n"
            + escape(
                f"  features: {features}\n"
                f"  target:   {', '.join(r.column for r in spec.target)}\n"
                f"  pipeline: {spec.build_pipeline()}\n"
                f"  metrics:  {', '.join(spec.metrics)}; watchers: {watchers}"
            ),
            soft_wrap=True,
        )
    err.print(f"{len(loaded)} learner spec(s) OK")
