"""Where the budget ledger lives in Kafka: a Faust table's changelog, keyed by user.

The privatize agent keeps each raw partition's ledger in memory and saves the users it
changed to the Faust table ``budget`` (changelog topic ``<app id>-budget-changelog``, same
partition as the raw partition, compacted): one entry per (stream, raw partition, pseudonym)
holding the events charged per window and the last raw offset charged. A worker that is
assigned the partition (after a crash or a rebalance) recovers the table first, so the
ledger follows the partition. ``eddyline budget show`` reads the same topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streams.settings import KafkaSettings, WorkerSettings
from streams.topics import read_latest

TABLE = "budget"


def app_id(ws: WorkerSettings, ks: KafkaSettings) -> str:
    """The Faust app id (and consumer group) of workers with these settings."""
    return f"{ks.namespace}.{ws.app_id}" if ks.namespace else ws.app_id


def changelog_topic(ws: WorkerSettings, ks: KafkaSettings) -> str:
    """Faust's name for the budget table's changelog topic."""
    return f"{app_id(ws, ks)}-{TABLE}-changelog"


def ledger_key(stream: str, partition: int, user_pid: str) -> str:
    return f"{stream}/{partition}/{user_pid}"


@dataclass(frozen=True)
class LedgerEntry:
    """One user's saved budget state in one stream's raw partition."""

    stream: str
    partition: int
    user_pid: str
    windows: dict[int, int]  # window index (epoch seconds // window length) -> events charged
    offset: int  # the last raw offset charged to the user


def parse(key: str, value: dict[str, Any]) -> LedgerEntry:
    stream, partition, pid = key.split("/", 2)
    windows = {int(w): int(c) for w, c in value["windows"].items()}
    return LedgerEntry(stream, int(partition), pid, windows, int(value["offset"]))


def read_ledger(ws: WorkerSettings, ks: KafkaSettings) -> list[LedgerEntry]:
    """Every saved ledger entry, read from the changelog topic (Faust writes keys and values
    as JSON)."""
    out = []
    for key, value in read_latest(ks, changelog_topic(ws, ks)).items():
        entry = json.loads(value)
        if entry is not None:
            out.append(parse(json.loads(key), entry))
    return out
