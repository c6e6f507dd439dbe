"""The privatize stage: a raw message in, a private envelope and dead letters out.

``PrivatizeStage.process`` takes one raw Kafka message (its value, headers, position and
noise secret) and returns what to send: the private Arrow envelope (same partition, the
raw position in its ``eddyline-source`` header) and the dead letters. Nothing the message
holds can make it raise: whatever fails becomes a dead letter (``internal.error``) and the
partition moves on. It counts each raw message's rows once per process, however often a
crash or a rebalance makes the worker read it again.

``process_json`` takes a run of single-event JSON messages of one partition at once and
makes one private envelope of them (``schemas.json_batch``).

The stage also keeps, per raw partition, the budget ledgers (loaded from and saved to the
budget topic: ``load_ledger``, ``dirty_shards``) and the noise secrets (``noise``:
``privacy.noise``). The intake (``streams.worker.intake``) moves the bytes, on one thread.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eddyline.privacy.ledger import shard_columns
from eddyline.privacy.noise import NoiseKeys
from eddyline.schemas.deadletter import DeadLetter, Reason
from eddyline.schemas.envelope import H_SOURCE, Headers, encode_arrow
from eddyline.schemas.json_batch import JsonRun
from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.budget_state import repeat_chunks, repeats_key, shard_key, shard_of
from eddyline.streams.worker.metrics import WorkerMetrics
from eddyline.streams.worker.privatizer import Outcome, Privatizer

log = logging.getLogger("eddyline.worker")

# The worker's producer takes messages up to 16 MiB (``producer_max_request_size``); a
# private envelope leaves room for its headers and the record's framing.
MAX_PRIVATE_BYTES = 16 * 1024 * 1024 - 64 * 1024


@dataclass(frozen=True)
class RawMessage:
    """One message of a raw topic, as the stage needs it."""

    value: bytes | None
    headers: Any
    source: SourceRef
    timestamp: float  # the Kafka timestamp, seconds (the broker's append time)


@dataclass
class Privatized:
    """What one raw message became: the private envelope to send (if any rows crossed)
    and the dead letters."""

    stream: str
    private: tuple[bytes, Headers] | None = None
    rows: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


class PrivatizeStage:
    """The privacy boundary of one worker process (see the module docstring)."""

    def __init__(
        self,
        privatizer: Privatizer,
        metrics: WorkerMetrics,
        stream_of: dict[str, str],
        *,
        keep_windows: int,
        max_private_bytes: int = MAX_PRIVATE_BYTES,
    ) -> None:
        self.privatizer, self.metrics, self.stream_of = privatizer, metrics, stream_of
        self.noise = NoiseKeys(privatizer.budget[2], keep_windows, {})
        self.max_private_bytes = max_private_bytes
        # Per raw partition, the highest offset whose rows the metrics counted.
        self._counted: dict[tuple[str, int], int] = {}
        started = time.monotonic()  # the accountant's search, before consuming (seconds)
        self.allowances = privatizer.allowances()
        self.allowances_s = time.monotonic() - started

    # -- one message ----------------------------------------------------------------------

    def noise_name(self, message: RawMessage) -> str:
        """The name of the noise secret ``message`` is noised with."""
        src = message.source
        window = self.noise.window_for(message.timestamp, self.privatizer.clock())
        return self.noise.name(self.stream_of[src.topic], src.partition, window)

    def process(self, message: RawMessage, noise_key: bytes) -> Privatized:
        """One raw message through the privacy stage; never raises for its content."""
        src = message.source
        return self._take(
            src,
            lambda stream: self.privatizer.process(
                message.value,
                message.headers,
                src,
                stream,
                noise_key=noise_key,
                timestamp=message.timestamp,
            ),
        )

    def process_json(self, run: JsonRun, noise_key: bytes) -> Privatized:
        """A run of single-event JSON messages of one partition, as one batch."""
        return self._take(
            run.source,
            lambda stream: self.privatizer.process_json(run, stream, noise_key=noise_key),
        )

    def _take(self, src: SourceRef, privatise: Callable[[str], Outcome]) -> Privatized:
        stream = self.stream_of[src.topic]
        first = src.offset > self._counted.get((src.topic, src.partition), -1)
        out = Privatized(stream)
        started = time.thread_time()
        try:
            result = privatise(stream)
            self.metrics.charge("privatize", started, result.received)
            out.dead = list(result.dead)
            if result.private is not None and result.private.num_rows:
                self._seal(result, src, out)
            if first:
                self._count(stream, result, out)
            if result.new_epoch:
                log.warning(
                    "budget ledger %s/%d: %s is a new topic (id %s); its offsets start afresh",
                    stream,
                    src.partition,
                    src.topic,
                    src.epoch,
                )
                self.metrics.epochs.labels("privatize", src.topic).inc()
        except Exception as exc:  # a bug must not block the partition: dead-letter it
            log_failure("privatize", src, exc)
            out = Privatized(
                stream, dead=[DeadLetter(Reason.INTERNAL_ERROR, type(exc).__name__, src)]
            )
        if first:
            for letter in out.dead:
                self.metrics.deadletters.labels(letter.reason).inc()
                self.metrics.deadlettered_events.labels(letter.reason).inc(letter.count)
            self._counted[(src.topic, src.partition)] = src.offset
        return out

    def _seal(self, result: Outcome, src: SourceRef, out: Privatized) -> None:
        """The private envelope, unless Kafka would refuse it on every retry."""
        assert result.private is not None
        schema_id = result.schema_id or ""
        value, headers = encode_arrow(result.private, schema_id, [(H_SOURCE, src.header())])
        if len(value) > self.max_private_bytes:
            out.dead.append(
                DeadLetter(
                    Reason.ENVELOPE_TOO_LARGE,
                    f"its private batch would be {len(value):,} bytes, over the "
                    f"{self.max_private_bytes:,} a Kafka message may hold",
                    src,
                    schema_id,
                    count=result.private.num_rows,
                )
            )
            return
        out.private, out.rows = (value, headers), result.private.num_rows

    def _count(self, stream: str, result: Outcome, out: Privatized) -> None:
        m = self.metrics
        m.events_in.labels(stream).inc(result.received)
        m.envelope_rows.observe(result.received)
        m.suppressed.labels(stream, "consent").inc(result.suppressed)
        m.suppressed.labels(stream, "forgotten").inc(result.forgotten)
        m.suppressed.labels(stream, "budget").inc(result.over_budget)
        m.suppressed.labels(stream, "budget_coarsened").inc(result.coarsened)
        m.replayed.labels(stream).inc(result.replayed)
        m.repeated.labels(stream).inc(result.repeated)
        for kind, n in result.masked.items():
            m.pii_masked.labels(stream, kind).inc(n)
        if result.private is not None:
            m.budget_charged.labels(stream).inc(result.private.num_rows)
        m.events_private.labels(stream).inc(out.rows)

    # -- budget ledgers -------------------------------------------------------------------

    def load_ledger(self, saved: Iterable[tuple[str, Any]], stream: str, partition: int) -> int:
        """Restore one raw partition's ledgers from the budget table's (key, shard) items;
        how many users they hold."""
        saved = list(saved)
        prefix = f"{stream}/{partition}/"
        shards = [shard for key, shard in saved if key.startswith(prefix) and shard]
        self.privatizer.restore(stream, partition, shards)
        users = sum(len(shard_columns(s)["users"]) for s in shards)
        chunks = repeat_chunks(list(saved), stream, partition)
        keys = self.privatizer.budgets.restore_repeats(stream, partition, chunks)
        log.info(
            "budget ledger %s/%d: %d users, %d event keys restored", stream, partition, users, keys
        )
        return users

    def forget_ledger(self, stream: str, partition: int) -> None:
        """Drop a partition's in-memory ledger (it was revoked or lost)."""
        self.privatizer.ledgers.pop((stream, partition), None)
        self.privatizer.budgets.repeats.pop((stream, partition), None)

    def dirty_shards(self) -> list[tuple[str, int, dict[str, Any] | None]]:
        """The saved shards to rewrite, as (table key, raw partition, columns or None): every
        shard holding a user whose ledger changed. Windows before the clock's are dropped
        first (they are never charged again). The repeat filters' new keys come first: a
        crash between the two leaves keys without their ledger (a replay of their rows is
        then dropped as a repeat instead of a replay), never a ledger without its keys
        (after which a client's retry of those events would pass)."""
        out: list[tuple[str, int, dict[str, Any] | None]] = [
            (repeats_key(stream, partition, name), partition, chunk)
            for stream, partition, name, chunk in self.privatizer.budgets.repeat_chunks()
        ]
        for (stream, partition), ledger in self.privatizer.ledgers.items():
            ledger.forget_before(ledger.window_of(self.privatizer.clock()))
            dirty = ledger.dirty_shards(shard_of)
            for shard, columns in ledger.shards(dirty, shard_of).items():
                out.append((shard_key(stream, partition, shard), partition, columns))
        return out


def log_failure(stage: str, src: SourceRef, exc: BaseException) -> None:
    """Log a failure with its traceback's frames but without its message: exception text
    can quote the input (Arrow's and pydantic's do), and logs are past the privacy
    boundary."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s failed at %s: %s (message withheld)\n%s", stage, src, type(exc).__name__, frames)
