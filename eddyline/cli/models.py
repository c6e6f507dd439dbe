"""``eddyline learners`` and ``retrain``: the online models and the retraining job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from eddyline.cli.common import err, learners_app, out, retrain_app
from eddyline.schemas.errors import EddylineError
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
            handled_path=Path(registry) / "handled_drift_keys.txt",
        )
    except KeyboardInterrupt:
        stop.set()


@retrain_app.command("status")
def retrain_status(
    model: str = "click",
    registry: Annotated[str, typer.Option(help="registry root")] = "./lake/_registry",
) -> None:
    """Registered versions of a model: metrics, ε spent, lineage, and where the aliases point."""
    from eddyline.online_learning.registry import ModelRegistry

    reg = ModelRegistry(registry)
    aliases = {a: reg.alias(model, a) for a in ("champion", "challenger", "previous")}
    table = Table("version", "aliases", "holdout log-loss", "ε", "drift", "trained on")
    for v in reg.versions(model):
        names = ", ".join(a for a, n in aliases.items() if n == v.version)
        loss = v.metrics.get("holdout_log_loss", v.metrics.get("log_loss", float("nan")))
        table.add_row(
            str(v.version),
            names,
            f"{loss:.4f}",
            f"{v.epsilon:.3f}",
            v.drift_key or "bootstrap",
            json.dumps(v.lineage.get("trained_on", {})),
        )
    out.print(table)


@learners_app.command("check")
def learners_check(
    specs: Annotated[
        list[str] | None,
        typer.Argument(help="built-in names or YAML files; default: EDDYLINE_LEARNERS"),
    ] = None,
) -> None:
    """Load and check learner specs as the worker would; exit 1 naming the first problem."""
    from eddyline.online_learning.spec import load_specs

    loaded = load_specs(specs or WorkerSettings().learners)
    for spec in loaded:
        features = ", ".join(f"{f.column} ({f.kind})" for f in spec.features)
        watchers = ", ".join(w.key for w in spec.drift.watch) or "none"
        out.print(
            f"[bold]{spec.name}[/bold] v{spec.version} over {spec.stream}: {spec.description}\n"
            f"  features: {features}\n"
            f"  target:   {', '.join(r.column for r in spec.target)}\n"
            f"  pipeline: {spec.build_pipeline()}\n"
            f"  metrics:  {', '.join(spec.metrics)}; watchers: {watchers}",
            soft_wrap=True,
        )
    err.print(f"{len(loaded)} learner spec(s) OK")
