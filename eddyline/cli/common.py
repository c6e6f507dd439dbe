"""What every ``eddyline`` command shares: the Typer apps, the consoles, the settings.

Data goes to stdout (``out``), messages to stderr (``err``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from eddyline.streams.kafka.broker import KAFKA_VERSION

app = typer.Typer(help="eddyline: streaming data and feedback platform.", no_args_is_help=True)
broker_app = typer.Typer(help=f"A local Apache Kafka {KAFKA_VERSION} broker (KRaft, no Docker).")
worker_app = typer.Typer(help="The Faust worker.")
topics_app = typer.Typer(help="Kafka topics.")
drift_app = typer.Typer(help="Drift signals.")
schemas_app = typer.Typer(help="Event schema contracts (schemas/contracts).")
budget_app = typer.Typer(help="The per-user privacy budget.")
keys_app = typer.Typer(help="Pseudonym keys (the keyring file in EDDYLINE_PSEUDONYM_KEYRING).")
retrain_app = typer.Typer(help="Retraining on drift with DP (needs the \\[retrain] extra).")
learners_app = typer.Typer(help="Learner specs: the online models a worker runs.")
collector_app = typer.Typer(
    help="The HTTP collector: Segment's API and eddyline's own (needs the \\[collector] extra)."
)
for sub, name in (
    (schemas_app, "schemas"),
    (broker_app, "broker"),
    (worker_app, "worker"),
    (topics_app, "topics"),
    (drift_app, "drift"),
    (retrain_app, "retrain"),
    (budget_app, "budget"),
    (keys_app, "keys"),
    (learners_app, "learners"),
    (collector_app, "collector"),
):
    app.add_typer(sub, name=name)
# Messages hold names and text users chose (table names, SQL, extras like [query]): never
# read as markup.
err = Console(stderr=True, markup=False, highlight=False)
out = Console()
DEBUG = {"on": False}

Port = Annotated[int, typer.Option(help="client port on 127.0.0.1")]
CPort = Annotated[int, typer.Option(help="KRaft controller port")]
