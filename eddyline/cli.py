"""The ``eddyline`` command: ``eddyline <noun> <verb>``. Data to stdout, messages to stderr."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eddyline.schemas.errors import EddylineError
from eddyline.streams.kafka.broker import KAFKA_VERSION, LocalBroker
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings

app = typer.Typer(help="eddyline: streaming data and feedback platform.", no_args_is_help=True)
broker_app = typer.Typer(help=f"A local Apache Kafka {KAFKA_VERSION} broker (KRaft, no Docker).")
worker_app = typer.Typer(help="The Faust worker.")
topics_app = typer.Typer(help="Kafka topics.")
drift_app = typer.Typer(help="Drift signals.")
schemas_app = typer.Typer(help="Event schema contracts (schemas/contracts).")
app.add_typer(schemas_app, name="schemas")
app.add_typer(broker_app, name="broker")
app.add_typer(worker_app, name="worker")
app.add_typer(topics_app, name="topics")
app.add_typer(drift_app, name="drift")
budget_app = typer.Typer(help="The per-user privacy budget.")
keys_app = typer.Typer(help="Pseudonym keys (the keyring file in EDDYLINE_PSEUDONYM_KEYRING).")
retrain_app = typer.Typer(help="Retraining on drift with DP (needs the [retrain] extra).")
app.add_typer(retrain_app, name="retrain")
app.add_typer(budget_app, name="budget")
app.add_typer(keys_app, name="keys")
learners_app = typer.Typer(help="Learner specs: the online models a worker runs.")
app.add_typer(learners_app, name="learners")
err = Console(stderr=True)
out = Console()
_DEBUG = {"on": False}

Port = Annotated[int, typer.Option(help="client port on 127.0.0.1")]
CPort = Annotated[int, typer.Option(help="KRaft controller port")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option(help="show tracebacks")] = False) -> None:
    _DEBUG["on"] = debug


@broker_app.command("start")
def broker_start(port: Port = 9092, controller_port: CPort = 9093) -> None:
    """Fetch Kafka's jars (first run), format storage (first run), start, wait until ready."""
    broker = LocalBroker(port=port, controller_port=controller_port)
    with err.status(f"starting Kafka {KAFKA_VERSION} on {broker.bootstrap}..."):
        broker.start()
    err.print(
        f"Kafka {KAFKA_VERSION} is up on {broker.bootstrap} (pid {broker.pid()}, "
        f"log {broker.log_file})"
    )


@broker_app.command("stop")
def broker_stop(port: Port = 9092) -> None:
    """Stop the local broker."""
    stopped = LocalBroker(port=port).stop()
    err.print("stopped" if stopped else "no local broker was running")


@broker_app.command("status")
def broker_status(
    port: Port = 9092, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Whether the local broker runs and answers. Exit 1 if it does not answer."""
    broker = LocalBroker(port=port)
    state = {
        "bootstrap": broker.bootstrap,
        "pid": broker.pid(),
        "answers": broker.answers(),
        "version": KAFKA_VERSION,
        "dir": str(broker.dir),
    }
    if as_json:
        print(json.dumps(state))
    else:
        err.print(f"{'up' if state['answers'] else 'down'}: {state}")
    raise typer.Exit(0 if state["answers"] else 1)


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


@topics_app.command("create")
def topics_create() -> None:
    """Create the eddyline topics that are missing (partitions from EDDYLINE_PARTITIONS)."""
    from eddyline.streams.kafka.topics import STREAMS, ensure_topics

    created = ensure_topics(KafkaSettings(), STREAMS)
    err.print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@worker_app.command("run")
def worker_run(loglevel: Annotated[str, typer.Option(help="Faust log level")] = "info") -> None:
    """Run one worker (settings from EDDYLINE_* variables) until SIGTERM or Ctrl-C."""
    from eddyline.streams.worker.run import run_worker

    run_worker(WorkerSettings(), KafkaSettings(), loglevel=loglevel)


@app.command("simulate")
def simulate(
    events: Annotated[int, typer.Option(help="interaction events to send")] = 20_000,
    drift_at: Annotated[int, typer.Option(help="first drifted event (-1: no drift)")] = 10_000,
    users: int = 1_000,
    seed: int = 0,
) -> None:
    """Emit realistic interaction and feedback traffic with a concept drift."""
    from eddyline.simulate import TrafficSimulator
    from eddyline.streams.sdk.producer import EventProducer

    sim = TrafficSimulator(users=users, seed=seed, drift_at=None if drift_at < 0 else drift_at)
    with EventProducer() as producer:
        for event in sim.interactions(events):
            producer.emit(event)
        for fb in sim.feedback(events // 20):
            producer.emit(fb)
    err.print(f"sent {events + events // 20:,} events ({producer.delivered:,} acknowledged)")


@drift_app.command("tail")
def drift_tail(group: Annotated[str, typer.Option(help="consumer group")] = "eddyline-cli") -> None:
    """Print drift events as JSON lines as they arrive."""
    from eddyline.consumers.drift import DriftSubscriber

    with DriftSubscriber(group_id=group) as sub:
        for event in sub:
            print(event.model_dump_json(), flush=True)


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


@app.command("query")
def query(sql: str, lake: Annotated[str, typer.Option(help="lake root")] = "./lake") -> None:
    """Run DuckDB SQL over the Delta tables (each table is a view named after its stream)."""
    from eddyline.consumers.lake import Lake

    result = Lake(lake).sql(sql)
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@app.command("demo")
def demo(events: Annotated[int, typer.Option(help="interaction events")] = 40_000) -> None:
    """Broker + worker + simulated traffic with a drift; prints a summary that reconciles."""
    from eddyline.demo import run_demo

    r = run_demo(events, err)
    after = r.after_drift
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


def main() -> None:
    """Entry point: one-line errors unless --debug."""
    try:
        app()
    except EddylineError as exc:
        if _DEBUG["on"] or "--debug" in sys.argv:
            raise
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
