"""The worker's own state in Kafka: the budget ledgers and the noise secrets, each in a Faust
table whose changelog partition is the raw partition, so both follow a partition to its
next owner (after a crash or a rebalance) and are recovered before it consumes.

``save_budget`` writes the ledger shards a save must rewrite, after flushing every output
(a saved offset promises the user's events up to it are delivered, so a replay can skip
them), then flushes the changelog before the caller acks what the save covers.
``noise_key`` gives a raw message its noise secret, writing a new one to the changelog (and
flushing) before any noise drawn from it leaves the worker. ``destroy_noise`` tombstones
the secrets no replay can need.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from eddyline.streams.worker.pipeline import Pipeline
from eddyline.streams.worker.privatize import RawMessage

log = logging.getLogger("eddyline.worker")

NOISE_TABLE = "noise"
# Compacted, rolled and cleaned within hours, so a destroyed secret is soon gone from disk.
NOISE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(3600 * 1000),
    "delete.retention.ms": str(3600 * 1000),
    "min.cleanable.dirty.ratio": "0.01",
}


async def _send(table: Any, key: str, value: Any, partition: int, raw: bool = False) -> None:
    # Sent now, not through Table.send_changelog: that queues in Faust's producer buffer,
    # whose flush gives up after 0.1 s without a send, so a flush could return (and the
    # caller ack) before the record reached the Kafka client.
    await table.changelog_topic.send(
        key=key,
        value=value,
        partition=partition,
        key_serializer=table.key_serializer,
        value_serializer="raw" if raw else table.value_serializer,
    )


async def save_budget(app: Any, p: Pipeline, table: Any) -> int:
    """Save the ledger shards holding a user whose ledger changed; how many. The caller
    holds ``p.budget_lock``."""
    p.privatize.last_save = time.monotonic()
    await app.producer.flush()
    saved = 0
    for key, partition, columns in p.privatize.dirty_shards():
        await _send(table, key, columns, partition)
        if columns:
            table.data[key] = columns
        else:
            table.data.pop(key, None)
        saved += 1
    await app.producer.flush()
    return saved


async def noise_key(app: Any, p: Pipeline, table: Any, message: RawMessage) -> bytes:
    """The noise secret of a raw message: the one its partition's owners used before, else
    a new one, in the changelog before it is used. The caller holds ``p.budget_lock``."""
    keys = p.privatize.noise
    name = p.privatize.noise_name(message)
    found = keys.get(name)
    if found is None:
        found = keys.new()
        await _send(table, name, found.hex(), message.source.partition)
        await app.producer.flush()
        keys.store[name] = found.hex()
    return found


async def destroy_noise(p: Pipeline, table: Any) -> int:
    """Tombstone the noise secrets no replay can need (compaction then drops them). The
    caller holds ``p.budget_lock``."""
    keys = p.privatize.noise
    gone = keys.expired(p.privatize.privatizer.clock())
    for name in gone:
        await _send(table, name, None, int(name.split("/")[1]), raw=True)
        keys.store.pop(name, None)
    if gone:
        log.info("noise secrets destroyed: %d (their windows are past replay)", len(gone))
    return len(gone)
