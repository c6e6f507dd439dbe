"""Which sealed envelopes are durable: the marks a server waits for (streams/sdk/durable.py)."""

from __future__ import annotations

import threading
import time

from eddyline.streams.sdk.durable import Durability


def test_a_mark_is_durable_once_every_envelope_below_it_is_settled() -> None:
    lock = threading.RLock()  # the delivery's: numbering, exposing, settling hold it
    durable = Durability(lock)
    with lock:
        first, second, third = durable.number(), durable.number(), durable.number()
        for seq in (first, second, third):
            durable.expose(seq)
    called: list[str] = []
    durable.when(second + 1, lambda: called.append("up to second"))  # first and second
    durable.when(third + 1, lambda: called.append("all three"))
    with lock:
        assert durable.settle(second) == [] and called == []  # the first is still out
        due = durable.settle(first)
    for call in due:  # the caller runs them, outside the lock
        call()
    assert called == ["up to second"]
    assert not durable.wait(third + 1, time.monotonic() + 0.05)  # the third is out: timeout
    with lock:
        due = durable.settle(third)
    for call in due:
        call()
    assert called == ["up to second", "all three"]
    assert durable.wait(third + 1, time.monotonic() + 0.05)


def test_a_mark_with_nothing_out_is_answered_at_once() -> None:
    durable = Durability(threading.RLock())
    durable.number()  # sealed, and spooled without being exposed (Kafka away)
    called: list[int] = []
    durable.when(durable.sequence, lambda: called.append(1))
    assert called == [1]


def test_a_blocked_waiter_wakes_when_the_report_comes() -> None:
    lock = threading.RLock()
    durable = Durability(lock)
    with lock:
        seq = durable.number()
        durable.expose(seq)
    waited: list[bool] = []
    waiter = threading.Thread(
        target=lambda: waited.append(durable.wait(seq + 1, time.monotonic() + 10))
    )
    waiter.start()
    time.sleep(0.05)
    with lock:
        durable.settle(seq)
    waiter.join(5)
    assert waited == [True]
