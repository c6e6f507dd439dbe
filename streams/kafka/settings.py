"""Settings, one frozen pydantic-settings model per component, read from ``EDDYLINE_*``.

librdkafka options merge in this order, later wins: our defaults, the security fields,
then ``extra_config`` (copied, never mutated).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eddyline.schemas.storage import StorageOptions, is_remote

_ENV = SettingsConfigDict(env_prefix="EDDYLINE_", frozen=True, extra="ignore")


class KafkaSettings(BaseSettings):
    """Where Kafka is and how to talk to it (``EDDYLINE_BOOTSTRAP``, ``EDDYLINE_SASL_*``...)."""

    model_config = _ENV

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    # A prefix for every topic name, so several deployments (or tests) share one cluster.
    namespace: str = ""
    partitions: int = Field(default=3, ge=1)
    # Copies of each partition of the topics eddyline creates; unset: as many as the
    # cluster has brokers, up to 3 (streams/kafka/topics.py).
    replication: int | None = Field(default=None, ge=1)
    extra_config: dict[str, Any] = Field(default_factory=dict)

    def librdkafka(self, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """A fresh librdkafka config: ``defaults``, then security, then ``extra_config``.
        Its log lines go to the ``eddyline.kafka`` logger, one of a kind a minute."""
        from eddyline.streams.kafka.logs import kafka_logger

        conf: dict[str, Any] = {"logger": kafka_logger(), **(defaults or {})}
        conf["bootstrap.servers"] = self.bootstrap
        conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(dict(self.extra_config))
        return conf


def eddyline_home() -> Path:
    """Where jars, broker state and the spool live: ``$EDDYLINE_HOME`` or ``~/.eddyline``."""
    return Path(os.environ.get("EDDYLINE_HOME", Path.home() / ".eddyline"))


class ProducerSettings(BaseSettings):
    """The SDK: batching, delivery, spool, backpressure (``EDDYLINE_BATCH_MAX_EVENTS``...)."""

    model_config = _ENV

    # ~1-5k events per envelope keeps Faust's per-message cost negligible (ARCHITECTURE.md).
    batch_max_events: int = Field(default=5_000, ge=1)
    # Envelopes stay well under Kafka's 1 MiB default message.max.bytes.
    batch_max_bytes: int = Field(default=900_000, ge=1_024)
    # The oldest buffered event waits at most this long. The worker pays a fixed cost per
    # envelope, so short lingers at high rates make envelopes too small and the worker falls
    # behind; long ones add their own wait to every event (bench/RESULTS.md, "linger").
    linger_ms: int = Field(default=100, ge=0)
    # After this long without an acknowledgement an envelope goes to the spool.
    delivery_timeout_ms: int = Field(default=30_000, ge=1_000)
    metadata_timeout_s: float = Field(default=10.0, gt=0)
    spool_dir: Path = Field(default_factory=lambda: eddyline_home() / "spool")
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    # When the spool is full: wait up to block_timeout_s for room, or raise at once.
    on_full: Literal["block", "raise"] = "block"
    block_timeout_s: float = Field(default=30.0, ge=0)


class WorkerSettings(BaseSettings):
    """The Faust worker (``EDDYLINE_APP_ID``, ``EDDYLINE_LAKE_PATH``...)."""

    model_config = _ENV

    def load_streams(self) -> list[str]:
        """Import the event modules, then the stream names, each checked against the
        registry (``StreamConfigError`` naming the first problem)."""
        from eddyline.schemas.streams import check_streams, load_event_modules

        load_event_modules(self.event_modules)
        return check_streams(self.streams)

    def storage(self) -> StorageOptions:
        """The object-store options, from ``EDDYLINE_STORAGE_*`` (schemas/storage.py)."""
        return StorageOptions.from_env()

    def checkpoints(self) -> str:
        """Where model checkpoints go: ``checkpoint_path``, else ``<state_dir>/models``."""
        return self.checkpoint_path or str(self.state_dir / "models")

    @field_validator("lake_path", "checkpoint_path", "registry_path")
    @classmethod
    def _known_scheme(cls, location: str | None) -> str | None:
        if location is not None:
            is_remote(location)  # StorageError (one line) for a scheme no store speaks
        return location

    app_id: str = "eddyline"
    # A folder or an object-store URI (s3://, az://, abfss://, gs://), like checkpoint_path
    # and registry_path; their credentials: EDDYLINE_STORAGE_* (docs/storage.md).
    lake_path: str = "./lake"
    checkpoint_path: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # The HMAC key for pseudonyms. Unset: a key is made once and kept in ``state_dir``.
    pseudonym_key: SecretStr | None = None
    pseudonym_key_id: str = "k1"
    # A keyring file (privacy/pseudonymize.py has the format) for rotating keys; it wins
    # over ``pseudonym_key``. Each key must start on a budget-window boundary.
    pseudonym_keyring: Path | None = None
    state_dir: Path = Path(".eddyline")
    # When the lake agent commits to Delta (streams/batching.py): at once at this many
    # envelopes or rows; when the oldest has waited lake_max_wait_s; or when nothing has
    # arrived for lake_idle_s with lake_idle_min_rows pending (0 s: never). Envelopes
    # gather while the previous commit runs.
    lake_max_messages: int = Field(default=200, ge=1)
    lake_max_rows: int = Field(default=250_000, ge=1)
    lake_max_wait_s: float = Field(default=1.0, gt=0)
    lake_idle_s: float = Field(default=0.2, ge=0)
    lake_idle_min_rows: int = Field(default=1_000, ge=0)
    # At a graceful stop the lake commits what has gathered, waiting at most this long.
    lake_close_timeout_s: float = Field(default=15.0, ge=0)
    # The learn agents wait while the privatize or lake agent has messages queued, until
    # this many private messages wait to be learned (0: never wait): with a backlog,
    # events reach Delta first, and the models' lag stays bounded (streams/worker/agents.py).
    learn_yield_below: int = Field(default=1_000, ge=0)
    # The intake (streams/worker/intake.py) reads the raw topics up to this many messages
    # at a time, waiting at most intake_max_wait_s for them; a run of JSON messages
    # privatised as one batch holds at most intake_max_run of them.
    intake_max_messages: int = Field(default=20_000, ge=1)
    intake_max_wait_s: float = Field(default=0.1, gt=0)
    intake_max_run: int = Field(default=10_000, ge=1)
    # The event streams this worker processes, comma-separated: each an event type's name
    # (one raw and one private topic, one Delta table each). Event types that are not built
    # in come from event_modules: module names or .py paths whose BaseEvent subclasses
    # define them, imported at start-up (schemas/streams.py, docs/streams.md).
    streams: str = "interaction,feedback"
    event_modules: str = ""
    # Online models: built-in learner spec names and/or paths to YAML specs, comma-separated
    # (online_learning/spec.py, docs/learning.md).
    learners: str = "click,satisfaction"
    # Online learning, for every detector whose spec leaves them unset: the fewest events
    # before the warm-up may end (the error detector's ends when the model's error stops
    # falling: online_learning/cusum.py), and the events after an alarm tested at a
    # stricter threshold (ADWIN watchers: no alarm at all).
    drift_warmup: int = Field(default=1_000, ge=0)
    drift_cooldown: int = Field(default=2_000, ge=0)
    # The per-user privacy budget, per stream and window, composed by dp-accounting's PLD
    # accountant. 100 is a usable default for the demo traffic, not a recommendation: an
    # event with one ε=1 field then allows 152 events per user per day (docs/privacy.md).
    budget_epsilon: float = Field(default=100.0, gt=0)
    budget_delta: float = Field(default=1e-6, gt=0, lt=1)
    budget_window_s: int = Field(default=86_400, ge=60)
    # A repeated event_id of one user (a client's retry) is dropped for at least this long
    # (0: never); a filter keeps at most repeat_max_keys keys, 8 bytes each, per stream and
    # raw partition (past that its older window goes early: docs/privacy.md).
    repeat_window_s: int = Field(default=86_400, ge=0)
    repeat_max_keys: int = Field(default=4_000_000, ge=1_000)
    # The occurred_at values accepted: at most this old, at most this far ahead of the
    # worker's clock; others are dead-lettered (row.invalid: too_old / in_the_future).
    max_event_age_s: int = Field(default=365 * 86_400, ge=60)
    max_clock_skew_s: int = Field(default=86_400, ge=0)
    # A partition whose messages wait while an agent's finished offset stands still this
    # long is reported stalled (/status, eddyline_worker_partition_stalled_seconds).
    stall_after_s: float = Field(default=30.0, gt=0)
    # Rows of the event tables are deleted this many days after their event_date (0: kept);
    # retention overrides it per table, e.g. EDDYLINE_RETENTION='{"feedback": 30}'.
    retention_days: int = Field(default=0, ge=0)
    retention: dict[str, int] = Field(default_factory=dict)
    # Larger envelopes are dead-lettered (envelope.too_large), never decoded.
    max_envelope_bytes: int = Field(default=8 * 1024 * 1024, ge=1_024)
    max_envelope_rows: int = Field(default=100_000, ge=1)
    # The longest a fetch may wait at the broker for data (Faust fixes 1,500 ms, which
    # stalled every other partition behind one empty one: streams/transport.py).
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    # The cyclic GC collects new objects every this many container allocations, and
    # start-up's objects are frozen out of it (0: Python's 700; streams/heap.py says why).
    gc_young_threshold: int = Field(default=100_000, ge=0)
    # A worker killed with -9 holds its partitions until this expires; keep it short.
    session_timeout_s: float = Field(default=10.0, gt=1)
    # Model checkpoints (with the offsets they cover) go to checkpoint_path this often.
    checkpoint_every_s: float = Field(default=5.0, gt=0)
    # A worker that does not own a model (another worker holds its learn partition) reloads
    # it from the owner's newest checkpoint this often, for /predict: its answers lag the
    # owner's by at most checkpoint_every_s + model_refresh_s.
    model_refresh_s: float = Field(default=5.0, gt=0)
    seed: int | None = None  # fixed randomness, for tests only
    # What a core-hour costs (your currency): the stages' cost per million events in
    # /metrics (eddyline_worker_cost_per_million_events; 0.05 is about a cloud vCPU).
    price_per_core_hour: float = Field(default=0.05, ge=0)
    # How often a worker publishes its CPU per stage to signals.costs (the worker_costs
    # table, which `eddyline report` prices).
    cost_sample_s: float = Field(default=60.0, gt=0)
    # Off: no per-stage CPU accounting, cost gauges or cost samples (bench/pipeline.py's
    # `--phases accounting` measures what it costs with this switch, in one run).
    cost_accounting: bool = True
    # Shadow evaluation of registry models (docs/retraining.md): the learn agent scores the
    # champion and the challenger on live events and promotes / rolls back. Registry root
    # default: <lake_path>/_registry.
    shadow: bool = True
    registry_path: str | None = None
    shadow_window: int = Field(default=2_000, ge=10)
    shadow_min_events: int = Field(default=1_000, ge=1)
