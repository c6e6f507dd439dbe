from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from eddyline.privacy.mechanisms import LaplaceMechanism
from eddyline.privacy.policy import PrivacyPolicy
from eddyline.privacy.pseudonymize import HmacPseudonymizer, load_or_create_key
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.events import FeedbackEvent, InteractionEvent


def test_pseudonyms_are_deterministic_per_key_and_differ_across_keys() -> None:
    ids = pa.array(["alice", "bob", "alice"])
    a = HmacPseudonymizer(b"a" * 32, key_id="a").apply(ids).to_pylist()
    b = HmacPseudonymizer(b"b" * 32, key_id="b").apply(ids).to_pylist()
    assert a[0] == a[2] != a[1]
    assert set(a).isdisjoint(b)
    assert "alice" not in a[0]


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        HmacPseudonymizer(b"short", key_id="k")


def test_key_file_is_created_once_and_private(tmp_path) -> None:
    path = tmp_path / "k" / "pseudonym.key"
    first = load_or_create_key(path)
    assert load_or_create_key(path) == first and len(first) == 32
    assert path.stat().st_mode & 0o077 == 0


def test_laplace_noise_is_discrete_laplace_on_the_grid() -> None:
    # Chi-square against scipy's discrete Laplace over 20 equal-probability bins, alpha =
    # 0.001 on a fixed seed: a correct sampler fails with probability 0.001 for a random
    # seed; with this seed the outcome is deterministic.
    mech = LaplaceMechanism(epsilon=0.5, lower=0.0, upper=10.0)
    out = mech.apply(np.full(50_000, 4.0), np.random.default_rng(1234))
    steps = (out - mech.lower) / mech.grid - np.rint(4.0 / mech.grid)
    assert np.array_equal(steps, np.rint(steps))  # whole grid steps, nothing in between
    ref = stats.dlaplace(mech.parameter)
    edges = ref.ppf(np.linspace(0, 1, 21)[1:-1])
    observed = np.bincount(np.searchsorted(edges, steps, side="left"), minlength=20)
    expected = np.diff(np.concatenate([[0.0], ref.cdf(edges - 1), [1.0]])) * len(steps)
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_outputs_lie_on_the_grid_and_ignore_the_inputs_low_bits() -> None:
    mech = LaplaceMechanism(epsilon=1.0, lower=-5.0, upper=300.0)
    values = np.random.default_rng(0).uniform(-10, 310, 10_000)
    out = mech.apply(values, np.random.default_rng(42))
    units = (out - mech.lower) / mech.grid
    assert np.allclose(units, np.rint(units), atol=1e-6)
    # Inputs that differ below half a grid step give the very same output for the same draws:
    # the output set carries nothing of the input's low bits.
    nudged = mech.apply(values + mech.grid / 8, np.random.default_rng(42))
    snapped = np.rint((np.clip(values, -5, 300) + 5) / mech.grid)
    same = np.rint((np.clip(values + mech.grid / 8, -5, 300) + 5) / mech.grid) == snapped
    assert same.mean() > 0.5 and np.array_equal(out[same], nudged[same])


def test_laplace_clamps_before_noising() -> None:
    mech = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=1.0)
    out = mech.apply(np.full(50_000, 1e6), np.random.default_rng(5))
    assert abs(out.mean() - 1.0) < 0.05  # the clamped value, not 1e6


def _rows(model, **kw):
    e = model(**kw)
    return pa.Table.from_pylist(
        [{**e.__dict__, "event_id": str(e.event_id)}], schema=arrow_schema(model)
    )


def test_policy_replaces_ids_drops_redacted_text_and_noises_numbers() -> None:
    pseud = HmacPseudonymizer(b"k" * 32, key_id="k9")
    fb = _rows(
        FeedbackEvent,
        user_id="carol@example.com",
        app_id="a",
        item_id="i",
        rating=4,
        comment="call me on 555-0100",
    )
    out = PrivacyPolicy.for_model(FeedbackEvent).apply(fb, pseud, np.random.default_rng(0))
    assert "user_id" not in out.column_names and "comment" not in out.column_names
    assert out["user_pid"][0].as_py() == pseud.one("carol@example.com")
    assert out["key_id"][0].as_py() == "k9"
    it = _rows(
        InteractionEvent,
        user_id="u",
        app_id="a",
        item_id="i",
        item_category="news",
        action="click",
        dwell_time_s=10.0,
    )
    noised = PrivacyPolicy.for_model(InteractionEvent).apply(it, pseud, np.random.default_rng(0))
    assert noised["dwell_time_s"][0].as_py() != 10.0


# --- key rotation ----------------------------------------------------------------------

DAY = 86_400


def test_each_event_is_pseudonymised_under_the_key_in_force_at_its_time(tmp_path) -> None:
    from datetime import UTC, datetime

    from eddyline.privacy.pseudonymize import PseudonymKey, add_key, load_keyring

    path = tmp_path / "keyring"
    add_key(path, "k1", datetime(1970, 1, 1, tzinfo=UTC))
    add_key(path, "k2", datetime(2026, 12, 1, tzinfo=UTC))
    assert path.stat().st_mode & 0o077 == 0
    keys = load_keyring(path)
    assert [k.key_id for k in keys] == ["k1", "k2"] and keys[1].not_before % DAY == 0
    assert "secret" not in repr(keys[0]) or keys[0].secret.hex() not in repr(keys[0])
    ring = HmacPseudonymizer(keys=keys)
    times = pa.array(
        [datetime(2026, 11, 30, 23, 59, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)] * 2,
        pa.timestamp("us", tz="UTC"),
    )
    pids, key_ids = ring.apply_at(pa.array(["alice", "alice", "bob", "bob"]), times)
    assert key_ids.to_pylist() == ["k1", "k2", "k1", "k2"]
    p = pids.to_pylist()
    # joinable within a key's lifetime, not across keys
    assert p[0] == HmacPseudonymizer(keys[0].secret, key_id="k1").one("alice") != p[1]
    assert p[1] == HmacPseudonymizer(keys[1].secret, key_id="k2").one("alice")
    assert len(set(p)) == 4
    with pytest.raises(ValueError, match="unique"):
        HmacPseudonymizer(keys=[PseudonymKey("k", b"a" * 16), PseudonymKey("k", b"b" * 16, 5)])


def test_a_broken_keyring_line_is_named_without_the_key(tmp_path) -> None:
    from eddyline.privacy.pseudonymize import load_keyring

    path = tmp_path / "keyring"
    path.write_text("# comment\nk1 1970-01-01 " + "ab" * 16 + "\nk2 2027-01-01 " + "cd" * 4 + "\n")
    with pytest.raises(ValueError, match=r"keyring:3: a pseudonym key needs at least 16") as exc:
        load_keyring(path)
    assert "cd" * 4 not in str(exc.value)


def test_a_worker_refuses_a_key_starting_mid_window(tmp_path) -> None:
    from eddyline.streams.kafka.settings import WorkerSettings
    from eddyline.streams.worker.privatizer import pseudonymizer_from_settings

    path = tmp_path / "keyring"
    path.write_text(f"k1 1970-01-01 {'ab' * 16}\nk2 2027-01-01T12:00:00 {'cd' * 16}\n")
    with pytest.raises(ValueError, match="starts mid budget window"):
        pseudonymizer_from_settings(WorkerSettings(pseudonym_keyring=path, state_dir=tmp_path))
    path.write_text(f"k1 1970-01-01 {'ab' * 16}\nk2 2027-01-01 {'cd' * 16}\n")
    ring = pseudonymizer_from_settings(WorkerSettings(pseudonym_keyring=path, state_dir=tmp_path))
    assert [k.key_id for k in ring.keys] == ["k1", "k2"]


# --- scrubbing kept free text ----------------------------------------------------------


def test_scrub_masks_each_kind_of_sensitive_string_and_counts_it() -> None:
    from eddyline.privacy.scrub import luhn, scrub

    texts = [
        "write to jane.doe+x@mail.example.org today",
        "call +44 20 7946 0958 or (555) 123-4567",
        "card 4111 1111 1111 1111, not 4111 1111 1111 1112",
        "from 192.168.10.254 and 2001:db8::8a2e:370:7334 at 10:30",
        "key AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEF",
        "Authorization: Bearer abcdefghijklmnop.qrstuvwx",
        "order 12345 shipped on 2026-11-29, version 1.2.3",
        None,
    ]
    out, found = scrub(pa.array(texts))
    assert out.to_pylist() == [
        "write to [email] today",
        "call [phone] or [phone]",
        "card [card], not 4111 1111 1111 1112",
        "from [ip] and [ip] at 10:30",
        "key [secret] and [secret]",
        "Authorization: [secret]",
        "order 12345 shipped on 2026-11-29, version 1.2.3",
        None,
    ]
    assert dict(found) == {"email": 1, "phone": 2, "card": 1, "ip": 2, "secret": 3}
    assert luhn("79927398713") and not luhn("79927398710")


def test_policy_applies_gaussian_unary_encoding_and_scrub_from_annotations() -> None:
    from collections import Counter
    from typing import Annotated, ClassVar

    from eddyline.privacy.mechanisms import GaussianMechanism, UnaryEncodingMechanism
    from eddyline.schemas.annotations import Noise, RandomizedResponse, Scrub
    from eddyline.schemas.events import BaseEvent
    from eddyline.schemas.registry import SchemaRegistry

    cats = tuple(f"genre{i}" for i in range(40))

    class Review(BaseEvent):
        event_name: ClassVar[str] = "review_test"
        event_version: ClassVar[int] = 1
        event_registry: ClassVar[SchemaRegistry | None] = SchemaRegistry()
        stars: Annotated[float, Noise(lower=0, upper=5, epsilon=1.0, delta=1e-6)]
        genre: Annotated[str, RandomizedResponse(cats, epsilon=1.0, encoding="unary")]
        text: Annotated[str, Scrub()]

    policy = PrivacyPolicy.for_model(Review)
    assert isinstance(policy.noised[0][1], GaussianMechanism)
    assert isinstance(policy.randomized[0][1], UnaryEncodingMechanism)
    table = _rows(
        Review, user_id="u1", app_id="a", stars=4.0, genre="genre3", text="mail me at a@b.io"
    )
    found: Counter[str] = Counter()
    out = policy.apply(table, HmacPseudonymizer(b"k" * 32), np.random.default_rng(0), found)
    assert out["text"].to_pylist() == ["mail me at [email]"] and found == {"email": 1}
    assert out.schema.field("genre").type == pa.list_(pa.string())
    assert set(out["genre"][0].as_py()) <= set(cats)
    units = out["stars"][0].as_py() / policy.noised[0][1].grid
    assert units == round(units)
