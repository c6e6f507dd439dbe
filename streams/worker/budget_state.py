"""Where the budget ledger lives in Kafka: a Faust table's changelog, keyed by user.

The privatize agent keeps each raw partition's ledger in memory and saves the shards holding
users it changed to the Faust table ``budget`` (changelog topic
``<app id>-budget-changelog``, same partition as the raw partition, compacted): one value per
(stream, raw partition, shard of 16 by pseudonym) holding, in columns, each pseudonym of the
shard, the last raw offset charged to it and the events charged to it per window
(``BudgetLedger.shards``); and the keys of the events released, for dropping a client's
repeats (``REPEATS``). A worker that is
assigned the partition (after a crash or a rebalance) recovers the table first, so the
ledger follows the partition. ``eddyline budget show`` reads the same topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from eddyline.privacy.ledger import shard_columns
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import read_latest

TABLE = "budget"


def app_id(ws: WorkerSettings, ks: KafkaSettings) -> str:
    """The Faust app id (and consumer group) of workers with these settings."""
    return f"{ks.namespace}.{ws.app_id}" if ks.namespace else ws.app_id


def changelog_topic(ws: WorkerSettings, ks: KafkaSettings) -> str:
    """Faust's name for the budget table's changelog topic."""
    return f"{app_id(ws, ks)}-{TABLE}-changelog"


SHARDS = 16


def shard_of(user_pid: str) -> int:
    """A pseudonym's shard: its first hex byte (pseudonyms are uniform HMAC output)."""
    return int(user_pid[:2], 16) % SHARDS


def shard_key(stream: str, partition: int, shard: int) -> str:
    return f"{stream}/{partition}/{shard}"


# The repeat filters' chunks (``privacy.repeats``) share the topic under keys
# ``~repeats/<stream>/<partition>/<window>/<n>``: "~" starts no stream name.
REPEATS = "~repeats/"


def repeats_key(stream: str, partition: int, name: str) -> str:
    return f"{REPEATS}{stream}/{partition}/{name}"


def repeat_chunks(
    saved: list[tuple[str, Any]], stream: str, partition: int
) -> list[tuple[str, dict[str, Any]]]:
    """One raw partition's saved repeat-filter chunks, as (chunk name, chunk)."""
    prefix = repeats_key(stream, partition, "")
    return [(key[len(prefix) :], chunk) for key, chunk in saved if key.startswith(prefix)]


@dataclass(frozen=True)
class LedgerEntry:
    """One user's saved budget state in one stream's raw partition."""

    stream: str
    partition: int
    user_pid: str
    windows: dict[int, int]  # window index (epoch seconds // window length) -> events charged
    offset: int  # the last raw offset charged to the user


def parse(key: str, shard: dict[str, Any]) -> list[LedgerEntry]:
    """The entries of one saved shard (``BudgetLedger.shards``' columns; shards saved before
    that format hold one object per user, read too)."""
    stream, partition, _ = key.split("/", 2)
    shard = shard_columns(shard)
    windows = [(int(w), counts) for w, counts in shard["windows"].items()]
    return [
        LedgerEntry(
            stream,
            int(partition),
            pid,
            {w: int(counts[i]) for w, counts in windows if counts[i]},
            int(offset),
        )
        for i, (pid, offset) in enumerate(zip(shard["users"], shard["offsets"], strict=True))
    ]


def read_ledger(ws: WorkerSettings, ks: KafkaSettings) -> list[LedgerEntry]:
    """Every saved ledger entry, read from the changelog topic (Faust writes keys and values
    as JSON)."""
    out: list[LedgerEntry] = []
    for key, value in read_latest(ks, changelog_topic(ws, ks)).items():
        shard, name = json.loads(value), json.loads(key)
        if shard and not name.startswith(REPEATS):
            out += parse(name, shard)
    return out
