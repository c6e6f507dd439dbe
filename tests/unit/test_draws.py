"""Keyed draws by row (privacy/draws.py): an event is noised the same however its batch is
cut, whatever shares the batch with it, and never like another event."""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from eddyline.privacy.draws import KeyedDraws
from eddyline.privacy.policy import PrivacyPolicy
from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.annotations import Noise, RandomizedResponse
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.registry import SchemaRegistry


class Rated(BaseEvent):
    """Every mechanism: Laplace, Gaussian (rejection sampling), k-ary and unary response."""

    event_name: ClassVar[str] = "rated_test"
    event_version: ClassVar[int] = 1
    event_registry: ClassVar[SchemaRegistry | None] = SchemaRegistry()
    dwell: Annotated[float, Noise(lower=0, upper=300, epsilon=1.0)]
    stars: Annotated[float, Noise(lower=0, upper=5, epsilon=1.0, delta=1e-6)]
    mood: Annotated[str, RandomizedResponse(("up", "down", "meh"), epsilon=1.0)]
    genre: Annotated[str, RandomizedResponse(tuple("abcdefghijklmnop"), 0.5, encoding="unary")]


N = 2_000
PSEUDONYMS = HmacPseudonymizer(b"k" * 32)
POLICY = PrivacyPolicy.for_model(Rated)
SECRET, SOURCE = bytes(range(32)), "events.rated_test/0@topic-id"


def _events() -> pa.Table:
    rng = np.random.default_rng(5)
    rows = [
        Rated(
            user_id=f"u{i % 50}",
            app_id="a",
            dwell=float(rng.uniform(0, 300)),
            stars=float(rng.integers(1, 6)),
            mood=str(rng.choice(["up", "down", "meh"])),
            genre=str(rng.choice(list("abcdefghijklmnop"))),
        ).model_dump(mode="json")
        for i in range(N)
    ]
    table = pa.Table.from_pylist(rows)  # JSON forms: times as text, cast to the schema's
    return table.select(arrow_schema(Rated).names).cast(arrow_schema(Rated))


EVENTS = _events()
# Each event's identity: messages of 5 events each (offsets 100, 101, ...), index within.
OFFSETS, INDICES = 100 + np.arange(N) // 5, np.arange(N) % 5


def _privatised(rows: np.ndarray) -> list[dict[str, object]]:
    draws = KeyedDraws.for_source(SECRET, SOURCE, OFFSETS[rows], INDICES[rows])
    out = POLICY.apply(EVENTS.take(pa.array(rows)), PSEUDONYMS, draws)
    return out.select(["dwell", "stars", "mood", "genre"]).to_pylist()


def test_an_event_is_noised_the_same_however_the_batches_are_cut() -> None:
    whole = _privatised(np.arange(N))
    rng = np.random.default_rng(9)
    cuts = np.sort(rng.choice(np.arange(1, N), 40, replace=False))
    pieces = [row for part in np.split(np.arange(N), cuts) for row in _privatised(part)]
    assert pieces == whole
    # and with other rows gone from the batch (rows dead-lettered or suppressed beside it)
    kept = np.flatnonzero(rng.random(N) < 0.3)
    assert _privatised(kept) == [whole[i] for i in kept.tolist()]


def test_other_events_other_positions_and_other_secrets_are_noised_independently() -> None:
    rows = np.arange(N)
    base = KeyedDraws.for_source(SECRET, SOURCE, OFFSETS, INDICES).random(4)
    moved = KeyedDraws.for_source(SECRET, SOURCE, OFFSETS + 10**6, INDICES).random(4)
    recreated = KeyedDraws.for_source(SECRET, "events.rated_test/0@new-id", OFFSETS, INDICES)
    other_secret = KeyedDraws.for_source(bytes(32), SOURCE, OFFSETS, INDICES).random(4)
    # no two draw sets share a value: 2,000 x 4 uniforms of 53 bits each
    for other in (moved, recreated.random(4), other_secret):
        assert not np.isin(base, other).any()
    assert len(np.unique(base)) == base.size  # nor does one row's draws repeat another's
    # each stream is its own: a field's draws never equal another field's
    keyed = KeyedDraws.for_source(SECRET, SOURCE, OFFSETS, INDICES)
    assert not np.isin(keyed.stream(1).random(), keyed.stream(2).random()).any()
    assert rows.size == N


def test_keyed_draws_refuse_what_would_alias_two_events() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyedDraws(b"short", np.arange(3), np.zeros(3))
    with pytest.raises(ValueError, match="at most"):
        KeyedDraws(SECRET, np.zeros(1), np.array([1 << 24]))
    with pytest.raises(ValueError, match="never negative"):
        KeyedDraws(SECRET, np.array([-1]), np.zeros(1))
    with pytest.raises(ValueError, match="streams"):
        KeyedDraws(SECRET, np.arange(3), np.zeros(3)).stream(256)
