"""The per-user budget: allowances from the accountant, enforced per batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from eddyline.privacy.accountant import allowance, composed_epsilon
from eddyline.privacy.ledger import BudgetLedger
from eddyline.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponseMechanism,
    UnaryEncodingMechanism,
)
from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.envelope import encode_arrow
from eddyline.schemas.events import InteractionEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.worker.privatizer import Privatizer, SourceRef

LAPLACE = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=300.0)
RR = RandomizedResponseMechanism(0.5, ("a", "b", "c"))
T0 = datetime(2026, 11, 29, tzinfo=UTC)


def test_the_allowance_is_the_largest_count_within_the_accountants_epsilon() -> None:
    for mechanisms, budget in (([LAPLACE], 10.0), ([LAPLACE], 100.0), ([LAPLACE, RR], 20.0)):
        n = allowance(mechanisms, epsilon=budget, delta=1e-6)
        assert composed_epsilon(mechanisms, n, 1e-6) <= budget
        assert composed_epsilon(mechanisms, n + 1, 1e-6) > budget
    gauss = GaussianMechanism(1.0, 0.0, 300.0, delta=1e-6)
    oue = UnaryEncodingMechanism(1.0, tuple("abcdefghij"))
    for mechanisms, budget in (([gauss], 20.0), ([LAPLACE, oue], 20.0)):
        n = allowance(mechanisms, epsilon=budget, delta=1e-5)
        assert composed_epsilon(mechanisms, n, 1e-5) <= budget
        assert composed_epsilon(mechanisms, n + 1, 1e-5) > budget
    # one event measures its declared ε (within the PLD's discretisation)
    assert abs(composed_epsilon([oue], 1, 1e-9) - 1.0) < 1e-3
    assert abs(composed_epsilon([gauss], 1, 1e-6) - 1.0) < 0.01
    # composition by the accountant beats adding up: 152 events of ε=1 fit in ε=100
    assert allowance([LAPLACE], epsilon=100.0, delta=1e-6) > 100


W0 = int(T0.timestamp()) // 86_400  # the window (day) T0 is in


def test_one_user_flooding_a_million_events_never_gets_past_the_budget() -> None:
    ledger = BudgetLedger(allowance([LAPLACE], epsilon=10.0, delta=1e-6))
    through = 0
    for _ in range(200):  # 200 batches of 5,000 events, one user, one day
        through += int(ledger.charge(pa.array(["flooder"] * 5_000), W0).allowed.sum())
    assert through == ledger.allowance == 10
    assert composed_epsilon([LAPLACE], through, 1e-6) <= 10.0


def test_each_user_and_each_window_has_its_own_allowance() -> None:
    ledger = BudgetLedger(allowance=3, window_s=86_400)
    users = pa.array(["a", "b", "a", "a", "a", "b", "c"])
    assert ledger.charge(users, W0).allowed.tolist() == [
        True,
        True,
        True,
        True,
        False,
        True,
        True,
    ]
    tomorrow = W0 + 1
    assert ledger.charge(pa.array(["a", "a"]), tomorrow).allowed.tolist() == [True, True]
    assert ledger.spent("a", int(T0.timestamp()) // 86_400) == 3
    assert ledger.forget_before(int(T0.timestamp()) // 86_400 + 1) == 3  # a, b, c of day 0


def test_the_privacy_stage_suppresses_and_counts_over_budget_rows() -> None:
    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k"),
        np.random.default_rng(0),
        budget=(10.0, 1e-6, 86_400),
        clock=T0.timestamp,
    )
    events = [
        e.model_copy(update={"user_id": "same-user", "occurred_at": T0})
        for e in TrafficSimulator(seed=1).interactions(25)
    ]
    rows = [{**e.__dict__, "event_id": str(e.event_id)} for e in events]
    value, headers = encode_arrow(
        pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent)), "interaction:1"
    )
    out = privatizer.process(value, headers, SourceRef("raw", 0, 0), "interaction")
    assert out.private is not None and out.private.num_rows == 10 and out.over_budget == 15
    assert out.private["event_id"].to_pylist() == [r["event_id"] for r in rows[:10]]  # first come


def test_a_budget_beyond_the_search_ceiling_allows_the_ceiling() -> None:
    from eddyline.privacy.accountant import MAX_ALLOWANCE

    assert allowance([LAPLACE], epsilon=1e9, delta=1e-6) == MAX_ALLOWANCE


def test_replays_are_skipped_per_user_so_a_rerun_leaves_the_ledger_unchanged() -> None:
    ledger = BudgetLedger(allowance=3)
    batches = [(["a", "b", "a"], 10), (["a", "a", "c"], 11), (["b", "c"], 12)]
    for users, offset in batches:
        ledger.charge(pa.array(users), W0, offset)
    before = dict(ledger.counts)
    # A crash after the first two messages were saved: both are replayed, then the third.
    replay = ledger.charge(pa.array(["a", "a", "c"]), W0, 11)
    assert replay.replayed == 3 and not replay.allowed.any()
    assert ledger.counts == before
    # A user new to a replayed message is charged: nothing was saved for them.
    fresh = ledger.charge(pa.array(["a", "d"]), W0, 11)
    assert fresh.allowed.tolist() == [False, True] and fresh.replayed == 1


def test_a_ledger_saved_and_restored_entry_by_entry_is_the_same_ledger() -> None:
    ledger = BudgetLedger(allowance=5)
    ledger.charge(pa.array(["a", "b", "a"]), W0, 7)
    ledger.charge(pa.array(["a"]), W0 + 1, 8)
    saved = ledger.drain_dirty()
    assert set(saved) == {"a", "b"} and not ledger.has_changes
    copy = BudgetLedger(allowance=5)
    for user, entry in saved.items():
        assert entry is not None
        copy.restore(user, entry)
    assert copy.counts == ledger.counts and copy.last_offset == ledger.last_offset
    # forgetting old windows marks the users dirty; a user with nothing left is deleted
    ledger.forget_before(int(T0.timestamp()) // 86_400 + 1)
    assert ledger.drain_dirty() == {
        "a": {"offset": 8, "windows": {str(int(T0.timestamp()) // 86_400 + 1): 1}},
        "b": None,
    }


def test_a_policy_may_coarsen_over_budget_events_instead_of_suppressing_them() -> None:
    from typing import ClassVar, Literal

    from eddyline.schemas.registry import SchemaRegistry

    class Coarse(InteractionEvent):
        event_name: ClassVar[str] = "coarse_test"
        event_registry: ClassVar[SchemaRegistry] = SchemaRegistry()
        over_budget: ClassVar[Literal["suppress", "coarsen"]] = "coarsen"

    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k"),
        np.random.default_rng(0),
        budget=(10.0, 1e-6, 86_400),
        registry=Coarse.event_registry,
        clock=T0.timestamp,
    )
    rows = [
        {**e.__dict__, "event_id": str(e.event_id), "user_id": "same-user", "occurred_at": T0}
        for e in TrafficSimulator(seed=1).interactions(25)
    ]
    value, headers = encode_arrow(
        pa.Table.from_pylist(rows, schema=arrow_schema(Coarse)), "coarse_test:1"
    )
    out = privatizer.process(value, headers, SourceRef("raw", 0, 0), "coarse_test")
    assert out.private is not None and out.private.num_rows == 25
    assert out.coarsened == 15 and out.over_budget == 0
    dwell = out.private["dwell_time_s"].to_pylist()
    assert None not in dwell[:10] and dwell[10:] == [None] * 15  # nothing protected leaks
    assert out.private["action"].to_pylist() == [r["action"] for r in rows]  # the rest stays
    assert (
        privatizer.ledger(Coarse).spent(
            out.private["user_pid"][0].as_py(), int(T0.timestamp()) // 86_400
        )
        == 10
    )


def test_allowances_are_computed_up_front_not_on_the_first_event() -> None:
    """The accountant's search takes seconds; run at a worker's first event, it held the
    event loop that long. ``allowances()`` (called before the worker consumes) leaves
    nothing for ``process`` to compute."""
    from eddyline.privacy import accountant as budget

    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k"),
        np.random.default_rng(0),
        budget=(37.0, 1e-6, 86_400),  # a budget no other test asks for: a cold cache
    )
    before = budget._allowance.cache_info().misses
    found = privatizer.allowances()
    assert found["interaction:1"] == allowance([LAPLACE], epsilon=37.0, delta=1e-6)
    assert budget._allowance.cache_info().misses > before  # it searched
    searched = budget._allowance.cache_info().misses
    rows = [
        {**e.__dict__, "event_id": str(e.event_id)}
        for e in TrafficSimulator(seed=2).interactions(50)
    ]
    value, headers = encode_arrow(
        pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent)), "interaction:1"
    )
    out = privatizer.process(value, headers, SourceRef("raw", 0, 0), "interaction")
    assert out.private is not None and out.private.num_rows == 50
    assert budget._allowance.cache_info().misses == searched  # no search on the hot path


def test_shards_save_every_user_in_columns_and_restore_to_the_same_ledger() -> None:
    from eddyline.streams.worker.budget_state import parse, shard_of

    ledger = BudgetLedger(allowance=5)
    users = [f"{i:02x}user" for i in range(40)]  # first hex byte: shard i % 16
    ledger.charge(pa.array(users), W0, 7)
    ledger.charge(pa.array(users[:3]), W0 + 1, 8)
    assert ledger.take_dirty() == set(users) and not ledger.has_changes
    shards = ledger.shards(set(range(16)), shard_of)
    day = int(T0.timestamp()) // 86_400
    zero = shards[0]
    assert zero is not None and sorted(zero["users"]) == ["00user", "10user", "20user"]
    assert zero["offsets"] == [8 if u == "00user" else 7 for u in zero["users"]]
    assert zero["windows"] == {
        str(day): [1, 1, 1],
        str(day + 1): [1 if u == "00user" else 0 for u in zero["users"]],
    }
    # every user's saved state, read back per user, is its ledger entry
    entries = [e for s, cols in shards.items() if cols for e in parse(f"interaction/0/{s}", cols)]
    assert {e.user_pid for e in entries} == set(users)
    for e in entries:
        assert {"offset": e.offset, "windows": {str(w): c for w, c in e.windows.items()}} == (
            ledger.entry(e.user_pid)
        )
    # restored shard by shard: the same ledger
    copy = BudgetLedger(allowance=5)
    assert sum(copy.restore_shard(cols) for cols in shards.values() if cols) == 40
    assert copy.counts == ledger.counts and copy.last_offset == ledger.last_offset
    # every window gone: the shard is empty (a tombstone) and the ledger forgets the offsets
    ledger.forget_before(day + 5)
    assert ledger.shards({0}, shard_of) == {0: None} and not ledger.last_offset


def test_shards_saved_one_object_per_user_still_restore() -> None:
    from eddyline.streams.worker.budget_state import parse

    old = {"ab12": {"offset": 9, "windows": {"20421": 3}}}
    ledger = BudgetLedger(allowance=5)
    assert ledger.restore_shard(old) == 1
    assert ledger.counts == {("ab12", 20421): 3} and ledger.last_offset == {"ab12": 9}
    [entry] = parse("interaction/2/10", old)
    assert (entry.partition, entry.user_pid, entry.windows, entry.offset) == (
        2,
        "ab12",
        {20421: 3},
        9,
    )


def test_the_window_charged_is_the_clocks_never_the_events_own_time() -> None:
    """The audit's bypass: one user's events dated into many past days, sent in many
    messages with ledger saves (which forget past windows) between them, each got a fresh
    allowance. Charged to the worker clock's window, they share one."""
    now = [T0.timestamp()]
    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k"),
        np.random.default_rng(0),
        budget=(10.0, 1e-6, 86_400),
        clock=lambda: now[0],
    )

    def backdated(message: int) -> tuple[bytes, list[tuple[str, bytes]]]:
        events = [
            e.model_copy(update={"user_id": "u", "occurred_at": T0 - timedelta(days=message)})
            for e in TrafficSimulator(seed=message).interactions(10)
        ]
        rows = [{**e.__dict__, "event_id": str(e.event_id)} for e in events]
        return encode_arrow(
            pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent)), "interaction:1"
        )

    released = 0
    for message in range(40):
        value, headers = backdated(message)
        out = privatizer.process(value, headers, SourceRef("raw", 0, message), "interaction")
        released += 0 if out.private is None else out.private.num_rows
        for ledger in privatizer.ledgers.values():  # what every save does
            ledger.forget_before(ledger.window_of(now[0]))
        now[0] += 60.0
    assert released == 10  # the allowance of the one window the clock was in
    # the next window of the worker's clock brings the next allowance, and only that
    now[0] = T0.timestamp() + 86_400
    value, headers = backdated(99)  # new events (the same ones again would be repeats)
    out = privatizer.process(value, headers, SourceRef("raw", 0, 99), "interaction")
    assert out.private is not None and out.private.num_rows == 10


def test_a_window_once_left_is_never_charged_again() -> None:
    ledger = BudgetLedger(allowance=2)
    assert ledger.charge(pa.array(["a", "a"]), W0 + 1).allowed.all()
    stepped_back = ledger.charge(pa.array(["a"]), W0)  # the clock stepped back
    assert not stepped_back.allowed.any() and ledger.spent("a", W0) == 0


def test_charging_matches_a_row_by_row_reference_on_random_messages() -> None:
    """The vectorised ledger (slots, numpy) against the rule written row by row: replays
    are decided per user once per message; each other row is allowed while its user's
    count in the window is under the allowance."""
    rng = np.random.default_rng(5)
    ledger, counts, last = BudgetLedger(allowance=4), {}, {}
    offset = day = 0
    for _ in range(300):
        n = int(rng.integers(1, 30))
        users = [f"u{i}" for i in rng.integers(0, 12, n)]
        day += int(rng.random() < 0.02)  # the worker's clock moves to the next window
        if rng.random() < 0.2 and offset > 2:  # a replay of a recent message's offset
            at_offset = offset - int(rng.integers(1, 3))
        else:
            at_offset = offset = offset + 1
        replay = {u for u in users if last.get(u, -1) >= at_offset}
        want_allowed, want_over = [], []
        for u in users:
            key = (u, W0 + day)
            ok = u not in replay and counts.get(key, 0) < 4
            counts[key] = counts.get(key, 0) + ok
            want_allowed.append(ok)
            want_over.append(u not in replay and not ok)
        last.update(dict.fromkeys(set(users) - replay, at_offset))
        got = ledger.charge(pa.array(users), W0 + day, at_offset)
        assert got.allowed.tolist() == want_allowed and got.over.tolist() == want_over
    assert ledger.counts == {k: c for k, c in counts.items() if c}
    assert ledger.last_offset == last


def test_charging_with_the_pseudonymizers_encoding_equals_charging_the_column() -> None:
    """The privacy stage hands the ledger the pseudonymizer's encoding of the pseudonym
    column (distinct pseudonyms, row indices) instead of letting it encode the column
    again; both must charge alike, in one window or the next."""
    rng = np.random.default_rng(9)
    pseudonymizer = HmacPseudonymizer(b"k" * 32, key_id="k")
    plain, fast = BudgetLedger(allowance=3), BudgetLedger(allowance=3)
    for offset in range(40):
        n = int(rng.integers(1, 25))
        raw = pa.array([f"user-{i}" for i in rng.integers(0, 15, n)])
        at = pa.array([T0] * n, pa.timestamp("us", tz="UTC"))
        pids, _, encoding = pseudonymizer.encode_at(raw, at)
        assert encoding is not None
        window = W0 + offset // 20
        a = plain.charge(pids, window, offset)
        b = fast.charge(pids, window, offset, encoded=encoding)
        assert a.allowed.tolist() == b.allowed.tolist() and a.over.tolist() == b.over.tolist()
    assert plain.counts == fast.counts and plain.last_offset == fast.last_offset


def test_events_dated_across_a_key_rotation_share_one_allowance() -> None:
    """Pseudonyms follow each event's own time (the key in force then); the ledger counts a
    user under the key in force on the worker's clock, so dating events on both sides of a
    rotation does not make two users of one."""
    from eddyline.privacy.pseudonymize import PseudonymKey

    rotation = int(T0.timestamp())
    keys = [PseudonymKey("k1", b"a" * 32, 0), PseudonymKey("k2", b"b" * 32, rotation)]
    privatizer = Privatizer(
        HmacPseudonymizer(keys=keys),
        np.random.default_rng(0),
        budget=(10.0, 1e-6, 86_400),
        clock=lambda: rotation + 3_600.0,
    )
    released, pids = 0, set()
    for offset, at in enumerate([T0 - timedelta(hours=5), T0 + timedelta(minutes=30)]):
        rows = [
            {**e.__dict__, "event_id": str(e.event_id), "user_id": "u", "occurred_at": at}
            for e in TrafficSimulator(seed=offset).interactions(6)
        ]
        value, headers = encode_arrow(
            pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent)), "interaction:1"
        )
        out = privatizer.process(value, headers, SourceRef("raw", 0, offset), "interaction")
        assert out.private is not None
        released += out.private.num_rows
        pids |= set(out.private["user_pid"].to_pylist())
    assert len(pids) == 2  # stored under each event's key: two pseudonyms
    assert released == 10  # but one allowance: 6, then 4 of 6


def test_a_recreated_topic_restarts_the_offsets_but_not_the_budget() -> None:
    """A raw topic deleted and created again restarts at offset 0: with the old offsets its
    rows looked like replays and were dropped; the users' spending must stay."""
    ledger = BudgetLedger(allowance=3)
    assert not ledger.follow_epoch("A")  # the first epoch is adopted
    ledger.charge(pa.array(["a", "a"]), W0, offset=500)
    assert ledger.charge(pa.array(["a"]), W0, offset=0).replayed == 1  # same topic: a replay
    assert ledger.follow_epoch("B")  # created again
    fresh = ledger.charge(pa.array(["a", "a", "b"]), W0, offset=0)
    assert fresh.allowed.tolist() == [True, False, True]  # a: 2 spent, 1 left; not replays
    assert fresh.replayed == 0 and ledger.spent("a", W0) == 3
    shards = ledger.shards({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, lambda u: 0)
    restored = BudgetLedger(allowance=3)
    restored.restore_shard(shards[0])  # type: ignore[arg-type]
    assert restored.epoch == "B" and restored.last_offset == {"a": 0, "b": 0}
