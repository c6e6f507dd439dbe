"""Property tests: any valid event survives both wire forms; invalid input gets the
documented error."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import Field

from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.envelope import decode, encode_arrow, encode_json
from eddyline.schemas.errors import EventValidationError
from eddyline.schemas.events import BaseEvent, FeedbackEvent, InteractionEvent, new_event_id
from eddyline.schemas.registry import SchemaRegistry
from eddyline.schemas.validation import validate_table
from eddyline.streams.sdk.producer import EventProducer

_NOW = datetime.now(UTC).replace(tzinfo=None)
text = st.text(min_size=1, max_size=40)
interactions = st.builds(
    InteractionEvent,
    event_id=st.uuids(),
    user_id=text,
    # the accepted window (schemas.events.TimeWindow): a year back, a day ahead
    occurred_at=st.datetimes(
        min_value=_NOW - timedelta(days=360),
        max_value=_NOW + timedelta(hours=20),
        timezones=st.just(UTC),
    ),
    app_id=text,
    item_id=text,
    item_category=st.text(min_size=1, max_size=64),
    action=st.sampled_from(["view", "click", "purchase", "skip"]),
    dwell_time_s=st.floats(min_value=0, max_value=86_400, allow_nan=False),
    position=st.integers(0, 1_000),
    consent_store=st.booleans(),
    consent_learn=st.booleans(),
)
feedbacks = st.builds(
    FeedbackEvent,
    user_id=text,
    app_id=text,
    item_id=text,
    rating=st.integers(1, 5),
    label=st.none() | st.booleans(),
    comment=st.none() | st.text(max_size=200),
)


def _row(event: Any) -> dict[str, Any]:
    return {**event.__dict__, "event_id": str(event.event_id)}


@given(st.lists(interactions, min_size=1, max_size=20))
def test_arrow_form_round_trips_and_revalidates(events: list[InteractionEvent]) -> None:
    table = pa.Table.from_pylist([_row(e) for e in events], schema=arrow_schema(InteractionEvent))
    env = decode(*encode_arrow(table, "interaction:1"))
    assert env.table is not None
    back = [InteractionEvent.model_validate(r) for r in env.table.to_pylist()]
    assert back == events
    good, violations = validate_table(InteractionEvent, env.table)
    assert violations == [] and good.num_rows == len(events)


@given(st.one_of(interactions, feedbacks))
def test_json_form_round_trips(event: InteractionEvent | FeedbackEvent) -> None:
    env = decode(*encode_json(json.loads(event.model_dump_json()), event.schema_id()))
    assert type(event).model_validate(env.json_event) == event


@settings(max_examples=60)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "user_id",
                "app_id",
                "item_id",
                "action",
                "position",
                "dwell_time_s",
                "item_category",
                "nonsense",
            ]
        ),
        st.one_of(st.none(), st.integers(), st.text(max_size=3), st.floats()),
    )
)
def test_invalid_dicts_raise_the_documented_error_naming_a_field(data: dict[str, Any]) -> None:
    producer = EventProducer(registry=CollectorRegistry())
    try:
        producer.emit(data, schema=InteractionEvent)
    except EventValidationError as exc:
        assert exc.field is not None and exc.reason
    else:  # none of these can be valid: `action` values of at most 3 characters never are
        raise AssertionError(f"accepted {data!r}")
    finally:
        producer.close()


ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),  # no dashes: valid, but not canonical
    # one character of a canonical id replaced by anything
    st.tuples(st.uuids(), st.integers(0, 35), st.characters()).map(
        lambda t: str(t[0])[: t[1]] + t[2] + str(t[0])[t[1] + 1 :]
    ),
    st.text(max_size=40),
)


@given(st.lists(ids, min_size=1, max_size=12), st.integers(0, 3))
def test_the_canonical_uuid_fast_path_agrees_with_the_regex(values: list[str], skip: int) -> None:
    """``_canonical_uuids`` may only say yes when the regex accepts every id; when it says
    no, the regex decides. Checked on sliced arrays too (a non-zero Arrow offset)."""
    import pyarrow.compute as pc

    from eddyline.schemas.validation import _UUID_RE, _canonical_uuids

    column = pa.chunked_array([pa.array(values, pa.string()).slice(min(skip, len(values) - 1))])
    by_regex = pc.all(pc.match_substring_regex(column, _UUID_RE)).as_py()
    if _canonical_uuids(column):
        assert by_regex
    canonical = all(len(v) == 36 and v.count("-") == 4 for v in column.to_pylist())
    if by_regex and canonical:
        assert _canonical_uuids(column)


@given(st.lists(st.one_of(st.none(), st.uuids(version=None)), max_size=20))
def test_uuid_columns_hold_what_str_gives(values: list[uuid.UUID | None]) -> None:
    """The SDK formats ids in numpy from their ints; the text must be ``str(UUID)``'s
    exactly, and None a null."""
    from eddyline.schemas.arrow import uuid_column_of_ints

    column = uuid_column_of_ints([None if v is None else v.int for v in values])
    column.validate(full=True)
    assert column.to_pylist() == [None if v is None else str(v) for v in values]


def test_new_ids_are_distinct_version_4_uuids_in_canonical_form() -> None:
    from eddyline.schemas.arrow import new_uuid_column
    from eddyline.schemas.validation import _canonical_uuids

    made = [new_event_id() for _ in range(1_000)]
    bulk = new_uuid_column(1_000)
    parsed = [uuid.UUID(s) for s in bulk.to_pylist()]
    assert len(set(made) | set(parsed)) == 2_000
    for u in made + parsed:
        assert (u.version, u.variant) == (4, uuid.RFC_4122)
    assert _canonical_uuids(pa.chunked_array([bulk]))
    assert len(new_uuid_column(0)) == 0
    # made without UUID's argument checks, they must be ordinary UUIDs in every respect
    u = made[0]
    same = uuid.UUID(str(u))
    assert (u == same, hash(u) == hash(same), u.int, u.is_safe) == (
        True,
        True,
        same.int,
        same.is_safe,
    )
    assert pickle.loads(pickle.dumps(u)) == u


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    """Preforking servers (gunicorn) fork after import: without reseeding, every worker
    would repeat the parent's sequence of event ids."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id and leave at once
        os.write(write, new_event_id().bytes)
        os._exit(0)
    os.close(write)
    child_id = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id != new_event_id()


_numbers = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 300.0, 86_400.0, 86_400.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
)
_words = st.one_of(st.none(), st.text(max_size=3), st.just("x" * 300))


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            _numbers,
            st.one_of(st.none(), st.integers(-5, 1_005)),
            _words,
            st.one_of(st.none(), st.sampled_from(["view", "click", "buy", ""])),
            st.one_of(st.none(), st.uuids().map(str), st.text(max_size=36)),
        ),
        min_size=0,
        max_size=8,
    )
)
def test_the_summary_fast_path_never_passes_a_batch_with_a_bad_row(rows: list[tuple]) -> None:
    """``_clean`` decides most batches from per-column summaries; whenever it passes every
    column, the row-by-row masks must find no bad row either (it may only err towards
    "look row by row"), column by column. Also checks validate_table against the masks."""
    import pyarrow.compute as pc

    from eddyline.schemas.events import TimeWindow
    from eddyline.schemas.validation import _bad_mask, _checkable, _clean, _rules_now

    n = len(rows)
    good = {
        "event_id": [str(uuid.UUID(int=i)) for i in range(n)],
        "user_id": ["u"] * n,
        "occurred_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        "app_id": ["a"] * n,
        "consent_store": [True] * n,
        "consent_learn": [True] * n,
        "item_id": ["i"] * n,
        "item_category": ["c"] * n,
        "action": ["view"] * n,
        "dwell_time_s": [1.0] * n,
        "position": [0] * n,
    }
    columns = zip(*rows, strict=True) if rows else [[]] * 5
    for name, values in zip(
        ["dwell_time_s", "position", "item_category", "action", "event_id"], columns, strict=True
    ):
        good[name] = list(values)
    table = pa.table(good, schema=arrow_schema(InteractionEvent))
    any_bad = False
    for rule in _rules_now(InteractionEvent, TimeWindow()):
        col = _checkable(table[rule.name], rule)
        bad = any(pc.any(mask).as_py() is True for _, mask in _bad_mask(col, rule))
        if _clean(col, rule):  # per column: a pass must mean no mask of it is true
            assert not bad, (rule.name, col.to_pylist())
        any_bad = any_bad or bad
    kept, violations = validate_table(InteractionEvent, table)
    assert bool(violations) == any_bad
    assert kept.num_rows + sum(len(v.rows) for v in violations) == n


class _Optional(BaseEvent):
    """Optional constrained fields: nulls are fine, other values are checked."""

    event_name: ClassVar[str] = "optional_test"
    event_registry: ClassVar[SchemaRegistry] = SchemaRegistry()
    choice: Literal["a", "b"] | None = None
    share: Annotated[float | None, Field(gt=0, lt=1)] = None


@settings(max_examples=200)
@given(
    st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c"])), max_size=5),
    st.lists(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, float("nan")])), max_size=5),
)
def test_the_summary_fast_path_on_optional_fields(choices: list, shares: list) -> None:
    import pyarrow.compute as pc

    from eddyline.schemas.validation import _bad_mask, _clean, _rules

    for rule in _rules(_Optional):
        if rule.name not in ("choice", "share"):
            continue
        values = choices if rule.name == "choice" else shares
        col = pa.chunked_array([pa.array(values, arrow_schema(_Optional).field(rule.name).type)])
        bad = any(pc.any(mask).as_py() is True for _, mask in _bad_mask(col, rule))
        if _clean(col, rule):
            assert not bad, (rule.name, values)
        if all(v is None for v in values):  # an optional field left out is no violation
            assert not bad
