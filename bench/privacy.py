"""Privacy-stage throughput: pseudonymise + three noised fields + budget charge, per batch.

The work the privatize agent does on each envelope, on 1,000-event batches (the issue's
size): HMAC pseudonyms of the user ids (a Zipf population, so the pseudonym cache is as warm
as in production), three ``Noise`` fields on the discrete grid (two Laplace, one Gaussian)
and the vectorised per-user budget charge. Beside it, the same work with the noise drawn
by OpenDP's secure samplers (one vectorised call per field per batch) as the reference.

    .venv/bin/python bench/privacy.py [--events 1000000] [--batch 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import opendp.prelude as dp
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eddyline.privacy.ledger import BudgetLedger
from eddyline.privacy.mechanisms import GaussianMechanism, LaplaceMechanism
from eddyline.privacy.policy import PrivacyPolicy
from eddyline.privacy.pseudonymize import Encoding, HmacPseudonymizer
from eddyline.schemas.annotations import Noise, Pseudonymize
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.registry import SchemaRegistry

dp.enable_features("contrib")


class Purchase(BaseEvent):
    """A bench event with three noised numbers."""

    event_name: ClassVar[str] = "bench_purchase"
    event_version: ClassVar[int] = 1
    event_registry: ClassVar[SchemaRegistry | None] = SchemaRegistry()

    amount: Annotated[float, Noise(lower=0, upper=500, epsilon=1.0)]
    dwell_time_s: Annotated[float, Noise(lower=0, upper=300, epsilon=1.0)]
    basket_size: Annotated[float, Noise(lower=0, upper=50, epsilon=1.0, delta=1e-6)]
    seller_id: Annotated[str, Pseudonymize()] = "s"


def batches(n: int, size: int) -> list[pa.Table]:
    rng = np.random.default_rng(1)
    users = np.array([f"user-{i:07d}@example.com" for i in range(200_000)])
    now = datetime.now(UTC)
    out = []
    for _ in range(n // size):
        out.append(
            pa.table(
                {
                    "user_id": users[np.minimum(rng.zipf(1.3, size), len(users)) - 1],
                    "occurred_at": pa.array([now] * size, pa.timestamp("us", tz="UTC")),
                    "amount": rng.exponential(40.0, size),
                    "dwell_time_s": rng.exponential(30.0, size),
                    "basket_size": rng.integers(1, 20, size).astype(float),
                }
            )
        )
    return out


def _policy() -> PrivacyPolicy:
    full = PrivacyPolicy.for_model(Purchase)
    # only user_id is pseudonymised here: the bench batches carry no seller column
    return PrivacyPolicy(Purchase, ("user_id",), (), full.noised)


def run_ours(data: list[pa.Table]) -> float:
    policy, pseud = _policy(), HmacPseudonymizer(b"k" * 32, key_id="k1")
    ledger, rng = BudgetLedger(allowance=1_000), np.random.default_rng()
    start = time.perf_counter()
    for offset, batch in enumerate(data):
        encodings: dict[str, Encoding] = {}  # as the worker does (streams/processing.py)
        out = policy.apply(batch, pseud, rng, encodings=encodings)
        window = ledger.window_of(time.time())  # the worker clock's window, as the worker does
        ledger.charge(out["user_pid"], window, offset, encoded=encodings["user_pid"])
    return sum(b.num_rows for b in data) / (time.perf_counter() - start)


def run_opendp(data: list[pa.Table]) -> float:
    """The same work with OpenDP drawing the noise: integer discrete Laplace / Gaussian on
    the same grid, one call per field per batch."""
    policy, pseud = _policy(), HmacPseudonymizer(b"k" * 32, key_id="k1")
    ledger = BudgetLedger(allowance=1_000)
    space = dp.vector_domain(dp.atom_domain(T=int))
    samplers = []
    for name, mech in policy.noised:
        if isinstance(mech, LaplaceMechanism):
            m = dp.m.make_laplace(space, dp.l1_distance(T=int), scale=1.0 / mech.parameter)
        else:
            assert isinstance(mech, GaussianMechanism)
            m = dp.m.make_gaussian(space, dp.l2_distance(T=int), scale=mech.sigma)
        samplers.append((name, mech, m))
    start = time.perf_counter()
    for offset, batch in enumerate(data):
        out = batch
        for name, mech, sampler in samplers:
            snapped = np.rint(
                (np.clip(out[name].to_numpy(), mech.lower, mech.upper) - mech.lower) / mech.grid
            ).astype(np.int64)
            noised = np.asarray(sampler(snapped.tolist()), dtype=np.float64)
            idx = out.schema.get_field_index(name)
            out = out.set_column(idx, name, pa.array(mech.lower + noised * mech.grid))
        pids, key_ids = pseud.apply_at(out["user_id"], out["occurred_at"])
        out = out.set_column(0, "user_pid", pids).append_column("key_id", key_ids)
        ledger.charge(out["user_pid"], ledger.window_of(time.time()), offset)
    return sum(b.num_rows for b in data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--opendp-events", type=int, default=100_000)
    args = parser.parse_args()
    data = batches(args.events, args.batch)
    run_ours(data[:20])  # warm-up: the Gaussian's calibration, caches
    ours = [run_ours(data) for _ in range(args.rounds)]
    reference = data[: max(1, args.opendp_events // args.batch)]
    theirs = [run_opendp(reference) for _ in range(args.rounds)]
    print(
        f"eddyline: {', '.join(f'{r:,.0f}' for r in ours)} events/s; "
        f"OpenDP samplers: {', '.join(f'{r:,.0f}' for r in theirs)} events/s",
        file=sys.stderr,
    )
    mine, ref = statistics.median(ours), statistics.median(theirs)
    print(
        json.dumps(
            {
                "bench": "privacy",
                "events": args.events,
                "batch": args.batch,
                "events_per_s": round(mine),
                "opendp_events_per_s": round(ref),
                "ratio_vs_opendp": round(mine / ref, 2),
                "target_events_per_s": 1_000_000,
            }
        )
    )


if __name__ == "__main__":
    main()
