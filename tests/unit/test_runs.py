"""Runs of single-event JSON messages taken at once (the intake's batches): the same rows,
noise, charges and dead letters as one message at a time, however the runs are cut; and the
lake and the models take each row of overlapping replays once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from eddyline.privacy.ledger import BudgetLedger
from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.deadletter import Reason
from eddyline.schemas.envelope import encode_json
from eddyline.schemas.json_batch import JsonRun, event_id_at
from eddyline.schemas.source import OFFSET_COLUMN, SourceRef, rows_after
from eddyline.simulate import TrafficSimulator
from eddyline.streams.worker.privatizer import Privatizer
from eddyline.streams.worker.sink import DeltaSink

T0 = datetime(2026, 11, 29, tzinfo=UTC)
W0 = int(T0.timestamp()) // 86_400  # the window (day) T0 is in
RAW = "events.interaction"
NOISE = bytes(range(32))
CANARY = "canary-7f3a@example.com"
JSON_HEADERS = [("content-type", b"application/json")]  # as the intake routes them


def _privatizer() -> Privatizer:
    return Privatizer(
        HmacPseudonymizer(b"k" * 32, key_id="k1"),
        np.random.default_rng(3),
        budget=(3.0, 1e-6, 86_400),  # a small allowance: some users run out mid-run
    )


def _messages(n: int, seed: int) -> list[bytes]:
    """``n`` JSON messages, one in eight hostile in its own way, in random places."""
    rng = np.random.default_rng(seed)
    sim = TrafficSimulator(users=40, seed=seed)
    out = []
    for event in sim.interactions(n):
        ok = json.loads(event.model_dump_json())
        ok["occurred_at"] = datetime.now(UTC).isoformat()
        roll = rng.integers(0, 64)
        if roll == 0:
            ok[CANARY] = 1  # an unknown key
        elif roll == 1:
            ok["position"] = CANARY  # a wrong type: Arrow refuses the block
        elif roll == 2:
            ok["position"] = "7"  # a number as text: pydantic takes it
        elif roll == 3:
            ok["action"] = "teleport"  # a rule the vectorised check finds
        elif roll == 4:
            del ok["event_id"], ok["occurred_at"]  # filled in from the position
        elif roll == 5:
            out.append(b"{not json " + CANARY.encode())
            continue
        elif roll == 6:
            out.append(b'[{"user_id": "u"}]')
            continue
        elif roll == 7:
            out.append(json.dumps(ok, indent=2).encode())  # line breaks between tokens
            continue
        out.append(encode_json(ok, "interaction:1")[0])
    return out


def _run(values: list[bytes], offsets: np.ndarray, epoch: str = "id") -> JsonRun:
    first, last = int(offsets[0]), int(offsets[-1])
    src = SourceRef(RAW, 0, last, epoch, first)
    return JsonRun(values, offsets, np.full(len(values), T0.timestamp()), None, src)


def _by_offset(out_tables: list[tuple[pa.Table, np.ndarray]]) -> dict[int, dict[str, object]]:
    rows: dict[int, dict[str, object]] = {}
    for table, offsets in out_tables:
        for offset, row in zip(offsets.tolist(), table.to_pylist(), strict=True):
            row.pop(OFFSET_COLUMN, None)
            rows[offset] = row
    return rows


def test_a_run_gives_what_its_messages_give_one_at_a_time() -> None:
    values = _messages(600, seed=1)
    offsets = np.arange(600) * 2 + 10  # gaps: offsets of messages that were not events
    alone, together = _privatizer(), _privatizer()
    single_rows, single_dead = [], []
    for value, offset in zip(values, offsets.tolist(), strict=True):
        src = SourceRef(RAW, 0, offset, "id")
        out = alone.process(
            value, JSON_HEADERS, src, "interaction", noise_key=NOISE, timestamp=T0.timestamp()
        )
        single_dead += [(d.reason, d.field, d.source.offset) for d in out.dead]
        if out.private is not None:
            single_rows.append((out.private, np.array([offset])))
    cuts = np.sort(np.random.default_rng(4).choice(np.arange(1, 600), 25, replace=False))
    run_rows, run_dead = [], []
    for part in np.split(np.arange(600), cuts):
        out = together.process_json(
            _run([values[i] for i in part], offsets[part]), "interaction", noise_key=NOISE
        )
        run_dead += [(d.reason, d.field, d.source.offset) for d in out.dead]
        if out.private is not None:
            own = out.private[OFFSET_COLUMN].to_numpy() if len(part) > 1 else offsets[part]
            run_rows.append((out.private, own))
    assert sorted(run_dead, key=lambda d: d[2]) == sorted(single_dead, key=lambda d: d[2])
    reasons = {d[0] for d in run_dead}
    assert {Reason.ROW_INVALID, Reason.ENVELOPE_CORRUPT} <= reasons
    assert _by_offset(run_rows) == _by_offset(single_rows)  # same rows, noise and charges
    crossed = len(_by_offset(run_rows))  # 40 users with an allowance of ~3 each
    assert 100 < crossed and crossed + len(run_dead) < 600  # the rest were over budget
    assert CANARY not in " ".join(d.to_json().decode() for d in out.dead)
    assert together.ledgers[("interaction", 0)].counts == alone.ledgers[("interaction", 0)].counts


def test_a_json_event_without_an_id_or_a_time_gets_them_from_its_position() -> None:
    event = json.loads(next(iter(TrafficSimulator(seed=2).interactions(1))).model_dump_json())
    del event["event_id"], event["occurred_at"]
    value = json.dumps(event).encode()
    runs = [_privatizer().process_json(_run([value], np.array([7])), "interaction") for _ in "ab"]
    ids = [r.private["event_id"][0].as_py() for r in runs if r.private is not None]
    assert ids == [event_id_at(SourceRef(RAW, 0, 7, "id"), 7)] * 2  # a replay reads the same
    assert runs[0].private is not None
    assert runs[0].private["occurred_at"][0].as_py() == T0


def test_an_unknown_schema_dead_letters_every_message_of_the_run() -> None:
    run = _run([b'{"user_id": "u"}'] * 3, np.array([4, 5, 6]))
    run = JsonRun(run.values, run.offsets, run.timestamps, "nope:9", run.source)
    out = _privatizer().process_json(run, "interaction")
    assert [(d.reason, d.source.offset) for d in out.dead] == [
        (Reason.SCHEMA_UNKNOWN, o) for o in (4, 5, 6)
    ]


def test_messages_charged_in_groups_cut_anyhow_charge_as_one_by_one_and_replay_once() -> None:
    """The intake charges runs of single-event messages at once (each row with its own raw
    offset). However the runs are cut, the ledger decides as it does message by message;
    and a crash that loses the charges after a save replays a suffix cut differently,
    which is charged exactly once, as without the crash."""
    rng = np.random.default_rng(17)
    n = 600
    users = np.array([f"u{i}" for i in rng.integers(0, 25, n)])
    offsets = np.arange(n) * 3 + 5  # gaps: offsets of messages that were not events
    one_by_one = BudgetLedger(allowance=6)
    want = [
        bool(one_by_one.charge(pa.array([u]), W0, int(o)).allowed[0])
        for u, o in zip(users, offsets, strict=True)
    ]

    def grouped(ledger: BudgetLedger, start: int, seed: int) -> list[bool]:
        cuts = np.sort(np.random.default_rng(seed).choice(np.arange(start + 1, n), 30, False))
        out: list[bool] = []
        for part in np.split(np.arange(start, n), cuts - start):
            if len(part):
                out += ledger.charge(pa.array(users[part]), W0, offsets[part]).allowed.tolist()
        return out

    ledger = BudgetLedger(allowance=6)
    assert grouped(ledger, 0, 1) == want
    assert ledger.counts == one_by_one.counts and ledger.last_offset == one_by_one.last_offset
    # a save after row 250, then a crash; the replay regroups rows 200.. (a save covers
    # what it covers: rows 200-250 are replays for the users they charged)
    saved = BudgetLedger(allowance=6)
    for part in np.array_split(np.arange(251), 7):
        saved.charge(pa.array(users[part]), W0, offsets[part])
    replayed = grouped(saved, 200, 2)
    assert replayed[51:] == want[251:] and not any(replayed[:51])
    assert saved.counts == one_by_one.counts and saved.last_offset == one_by_one.last_offset


def test_rows_after_keeps_the_rows_a_replay_cut_differently_adds() -> None:
    table = pa.table({"x": [1, 2, 3, 4], OFFSET_COLUMN: [10, 12, 13, 15]})
    src = SourceRef(RAW, 0, 15, "id", 10)
    assert rows_after(table, src, 15) is None
    assert rows_after(table, src, 9).column_names == ["x"]  # all new, offsets dropped
    kept = rows_after(table, src, 12)
    assert kept is not None and kept["x"].to_pylist() == [3, 4]
    one = SourceRef(RAW, 0, 20, "id")
    assert rows_after(pa.table({"x": [1]}), one, 19)["x"].to_pylist() == [1]  # type: ignore[index]


def test_the_lake_writes_each_row_of_overlapping_replays_once(tmp_path) -> None:
    sink = DeltaSink(str(tmp_path), background_upkeep=False)
    when = pa.array([T0] * 10, pa.timestamp("us", tz="UTC"))

    def envelope(first: int, last: int) -> tuple[pa.Table, SourceRef]:
        offsets = np.arange(first, last + 1)
        table = pa.table(
            {"event_id": [f"e{o}" for o in offsets], "occurred_at": when[: len(offsets)]}
        )
        table = table.append_column(OFFSET_COLUMN, pa.array(offsets, pa.int64()))
        return table, SourceRef(RAW, 0, last, "id", first)

    assert sink.write("t", [envelope(0, 4)]) == 5
    # a replay regrouped: 3-7 overlaps in part, 5-9 is new
    assert sink.write("t", [envelope(3, 7), envelope(8, 9)]) == 5
    assert sink.write("t", [envelope(0, 9)]) == 0
    from deltalake import DeltaTable

    ids = DeltaTable(str(tmp_path / "t")).to_pyarrow_table()["event_id"].to_pylist()
    assert sorted(ids) == sorted(f"e{o}" for o in range(10))
    assert OFFSET_COLUMN not in DeltaTable(str(tmp_path / "t")).schema().to_arrow().names
