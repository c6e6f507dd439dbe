"""The Faust worker (needs the [worker] extra): the stages (privatize, lake, learn, the
table writers), the agents that feed them from Kafka, and the wiring (``app.build_app``,
``run.run_worker``). Nothing else is imported here."""

from eddyline.schemas.errors import require_extra

require_extra("worker", "the eddyline worker", "faust", "deltalake", "river", "dp_accounting")
