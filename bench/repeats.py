"""What dropping a client's repeated events costs the privacy stage.

The privatize stage's own work (decode, validate, pseudonymise, noise, budget charge) on
5,000-event Arrow envelopes of the simulator's traffic, each event with a fresh
``event_id``, with the repeat filter on (``privacy.repeats``: a key per event, checked
against the current and previous window's keys, a Bloom filter in front of sorted runs)
and off, in alternating rounds of one run; figures are medians. The filter holds every key
of a round (``--envelopes`` x 5,000), so a round ends with that many keys. A last check
sends a round's first envelope again at a new offset: each row must come back a repeat.

    .venv/bin/python bench/repeats.py [--envelopes 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.envelope import encode_arrow
from eddyline.schemas.events import InteractionEvent
from eddyline.schemas.source import SourceRef
from eddyline.simulate import TrafficSimulator
from eddyline.streams.worker.privatizer import Privatizer

ROWS = 5_000


def envelopes(n: int) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    events = TrafficSimulator(seed=1).interactions(ROWS)
    rows = [{**e.__dict__, "event_id": str(e.event_id)} for e in events]
    base = pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent))
    out = []
    for _ in range(n):
        ids = pa.array([str(uuid.uuid4()) for _ in range(ROWS)])
        out.append(encode_arrow(base.set_column(0, "event_id", ids), "interaction:1"))
    return out


def one_round(msgs: list, window_s: int) -> tuple[float, Privatizer]:
    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32),
        np.random.default_rng(0),
        budget=(1e6, 1e-6, 86_400),  # nobody runs out: every row is charged and kept
        repeats=(window_s, 4_000_000),
    )
    started = time.perf_counter()
    for offset, (value, headers) in enumerate(msgs):
        out = privatizer.process(
            value, headers, SourceRef("raw", 0, offset), "interaction", noise_key=b"n" * 32
        )
        assert out.repeated == 0 and out.private is not None  # (consent withholds a few)
    return len(msgs) * ROWS / (time.perf_counter() - started), privatizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    msgs = envelopes(args.envelopes)
    one_round(msgs[:2], 0)  # the accountant's allowance search, cached, outside the rounds
    on: list[float] = []
    off: list[float] = []
    for _ in range(args.rounds):
        rate, privatizer = one_round(msgs, 86_400)
        on.append(rate)
        off.append(one_round(msgs, 0)[0])
    again = privatizer.process(
        *msgs[0], SourceRef("raw", 0, len(msgs)), "interaction", noise_key=b"n" * 32
    )
    assert again.repeated == ROWS and again.private is None, again
    keys = len(privatizer.budgets.repeats[("interaction", 0)])
    result = {
        "bench": "repeats",
        "keys_held": keys,
        "events_per_s_filter_on": round(statistics.median(on)),
        "events_per_s_filter_off": round(statistics.median(off)),
        "ratio_on_vs_off": round(statistics.median(on) / statistics.median(off), 3),
        "ns_per_event_added": round(1e9 / statistics.median(on) - 1e9 / statistics.median(off)),
        "rounds": args.rounds,
    }
    print(f"filter on : {result['events_per_s_filter_on']:>12,} events/s (median)")
    print(f"filter off: {result['events_per_s_filter_off']:>12,} events/s (median)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
