"""A repeated event_id of one user is dropped before its budget is charged (privacy.repeats):
the filter, its keys, its saved chunks, and the privacy stage around it."""

from __future__ import annotations

import json
import time
from uuid import uuid4

import numpy as np
import pyarrow as pa
import pytest

from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.privacy.repeats import CHUNK_KEYS, RepeatFilter, event_keys
from eddyline.schemas.envelope import encode_json
from eddyline.schemas.events import InteractionEvent
from eddyline.schemas.json_batch import JsonRun
from eddyline.schemas.source import OFFSET_COLUMN, SourceRef
from eddyline.streams.worker.budget_state import repeat_chunks, repeats_key
from eddyline.streams.worker.privatizer import Privatizer
from tests.unit.test_processing import _envelope, _event, _row

DAY = 86_400.0
T0 = time.time() // DAY * DAY  # the start of today's window


def _keys(*values: int) -> np.ndarray:
    return np.array(values, np.uint64)


def test_a_key_repeats_within_its_window_and_the_next_then_is_forgotten() -> None:
    f = RepeatFilter(window_s=86_400)
    assert f.check(_keys(1, 2, 1), 10).tolist() == [False, False, True]
    assert f.check(_keys(2, 3), 10).tolist() == [True, False]
    assert f.check(_keys(1, 4), 11).tolist() == [True, False]  # the previous window counts
    assert f.check(_keys(3, 4), 12).tolist() == [False, True]  # window 10 is gone
    assert len(f) == 2  # 4 in window 11 (where it was first seen), 3 in window 12


def test_many_batches_merge_into_few_runs_and_all_are_found() -> None:
    rng = np.random.default_rng(1)
    f = RepeatFilter()
    batches = [rng.integers(0, 2**63, 1_000).astype(np.uint64) for _ in range(64)]
    for batch in batches:
        assert not f.check(batch, 0).any()
    assert len(f._runs[0]) <= 7  # runs merge as they double: a look-up is a few searches
    assert all(f.check(batch, 0).all() for batch in batches)


def test_a_full_filter_drops_its_older_window_first() -> None:
    f = RepeatFilter(max_keys=1_000)
    old, new = np.arange(800, dtype=np.uint64), np.arange(800, 1_400, dtype=np.uint64)
    f.check(old, 0)
    f.check(new, 1)
    assert f.truncated == 1 and len(f) == 600
    assert not f.check(old[:5], 1).any()  # the older window went early (counted above)


def test_saved_chunks_restore_the_filter_and_expired_chunks_are_deleted() -> None:
    f = RepeatFilter()
    first = np.arange(CHUNK_KEYS + 10, dtype=np.uint64)  # two chunks
    f.check(first, 5)
    saved, gone = f.chunks(5)
    assert sorted(saved) == ["5/0", "5/1"] and gone == []
    f.check(_keys(2**40), 6)
    more, _ = f.chunks(6)
    assert list(more) == ["6/0"]  # only what was added since the last save
    assert f.chunks(6) == ({}, [])
    again = RepeatFilter()
    for name, chunk in {**saved, **more}.items():
        again.restore_chunk(name, json.loads(json.dumps(chunk)), 6)
    assert again.check(first[::1000], 6).all() and again.check(_keys(2**40), 6).all()
    _, gone = again.chunks(8)  # windows 5 and 6 expired: their chunks are deleted
    assert sorted(gone) == ["5/0", "5/1", "6/0"]
    assert again.restore_chunk("5/0", saved["5/0"], 8) == 0  # an expired chunk loads nothing


def test_keys_differ_by_user_and_event_and_both_hash_paths_agree() -> None:
    ids = [str(uuid4()) for _ in range(3)]
    same_length = event_keys(["aa" * 32, "bb" * 32], np.array([0, 1, 0]), pa.array(ids))
    assert len(set(same_length.tolist())) == 3
    # the same ids among one of another length take the per-row path: same keys
    mixed = event_keys(["aa" * 32, "bb" * 32], np.array([0, 1, 0, 1]), pa.array([*ids, "x"]))
    assert mixed[:3].tolist() == same_length.tolist()
    other_user = event_keys(["cc" * 32], np.array([0]), pa.array(ids[:1]))
    assert other_user[0] != same_length[0]


# -- the privacy stage ---------------------------------------------------------------------


def _arrow(*events: InteractionEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    return _envelope([_row(e) for e in events])


@pytest.fixture
def privatizer() -> Privatizer:
    return Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k1"), np.random.default_rng(0), clock=lambda: T0
    )


def test_an_event_sent_again_is_dropped_before_its_budget_is_charged(
    privatizer: Privatizer,
) -> None:
    a, b = _event(), _event()
    first = privatizer.process(*_arrow(a, b), SourceRef("raw", 0, 1), "interaction")
    assert first.private is not None and first.private.num_rows == 2
    again = privatizer.process(*_arrow(b, _event()), SourceRef("raw", 0, 2), "interaction")
    assert again.repeated == 1 and again.private is not None and again.private.num_rows == 1
    assert again.private["event_id"].to_pylist() != [str(b.event_id)]
    ledger = privatizer.ledgers[("interaction", 0)]
    pid = first.private["user_pid"][0].as_py()
    assert ledger.spent(pid, ledger.window_of(T0)) == 3  # b charged once


def test_two_users_may_send_one_event_id_and_a_replay_is_a_replay(
    privatizer: Privatizer,
) -> None:
    a = _event(user_id="u-1")
    twin = a.model_copy(update={"user_id": "u-2"})  # another user, the same event_id
    out = privatizer.process(*_arrow(a, twin), SourceRef("raw", 0, 1), "interaction")
    assert out.repeated == 0 and out.private is not None and out.private.num_rows == 2
    # the same message read again (a crash before the commit): the ledger's replay
    replay = privatizer.process(*_arrow(a, twin), SourceRef("raw", 0, 1), "interaction")
    assert (replay.replayed, replay.repeated, replay.private) == (2, 0, None)


def test_a_json_run_drops_a_retry_in_the_same_run(privatizer: Privatizer) -> None:
    e = _event()
    value, _ = encode_json({**e.__dict__, "event_id": str(e.event_id)}, "interaction:1")
    other = _event()
    value2, _ = encode_json({**other.__dict__, "event_id": str(other.event_id)}, "interaction:1")
    run = JsonRun(
        [value, value2, value],
        np.array([10, 11, 12]),
        np.full(3, T0),
        "interaction:1",
        SourceRef("raw", 0, 12, first=10),
    )
    out = privatizer.process_json(run, "interaction")
    assert out.repeated == 1 and out.private is not None
    assert out.private[OFFSET_COLUMN].to_pylist() == [10, 11]


def test_the_filter_follows_the_partition_through_its_saved_chunks(
    privatizer: Privatizer,
) -> None:
    e = _event()
    privatizer.process(*_arrow(e), SourceRef("raw", 3, 1), "interaction")
    saved = [
        (repeats_key(stream, part, name), chunk)
        for stream, part, name, chunk in privatizer.budgets.repeat_chunks()
    ]
    assert [key for key, _ in saved] == [f"~repeats/interaction/3/{int(T0 // DAY)}/0"]
    successor = Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k1"), np.random.default_rng(1), clock=lambda: T0
    )
    loaded = successor.budgets.restore_repeats(
        "interaction", 3, repeat_chunks(saved, "interaction", 3)
    )
    assert loaded == 1
    out = successor.process(*_arrow(e), SourceRef("raw", 3, 2), "interaction")
    assert out.repeated == 1 and out.private is None


def test_a_filter_over_its_cap_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32), np.random.default_rng(0), repeats=(86_400, 1_000)
    )
    events = [_event(user_id=f"u-{i}") for i in range(1_200)]
    privatizer.process(*_arrow(*events[:600]), SourceRef("raw", 0, 1), "interaction")
    privatizer.process(*_arrow(*events[600:]), SourceRef("raw", 0, 2), "interaction")
    with caplog.at_level("WARNING", "eddyline.worker"):
        privatizer.budgets.repeat_chunks()
        privatizer.budgets.repeat_chunks()
    warned = [r for r in caplog.records if "EDDYLINE_REPEAT_MAX_KEYS" in r.getMessage()]
    assert len(warned) == 1 and "interaction/0" in warned[0].getMessage()


def test_a_window_of_zero_keeps_every_repeat() -> None:
    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32), np.random.default_rng(0), repeats=(0, 1_000)
    )
    e = _event()
    privatizer.process(*_arrow(e), SourceRef("raw", 0, 1), "interaction")
    out = privatizer.process(*_arrow(e), SourceRef("raw", 0, 2), "interaction")
    assert out.repeated == 0 and out.private is not None and out.private.num_rows == 1
