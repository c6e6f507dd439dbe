"""Which sealed envelopes are durable (acknowledged by Kafka, in the spool, or refused for
good and counted): what a server waits for before it answers "accepted".

``Delivery`` numbers envelopes in sealing order, marks each one it hands to librdkafka
``exposed`` and ``settle``s it when its delivery report comes. A mark (``EventProducer.seal``
returns one) is durable once no exposed envelope is numbered below it. Wait for it blocking
(``wait``) or be called back (``when``: on the reporting thread, or at once), so a server
answers many requests without a thread blocked for each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Durability:
    """Exposed envelopes and who waits for them; shares the delivery's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock, self._settled = lock, threading.Condition(lock)
        self._exposed: set[int] = set()  # sent, not yet acknowledged or spooled: at risk
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self.sequence = 0  # the number the next envelope gets (spool order)

    def number(self) -> int:
        """A new envelope's number (the caller holds the lock)."""
        self.sequence += 1
        return self.sequence - 1

    def expose(self, seq: int) -> None:
        """Handed to librdkafka (the caller holds the lock)."""
        self._exposed.add(seq)

    def settle(self, seq: int) -> list[Callable[[], None]]:
        """Acknowledged, spooled or refused (the caller holds the lock): the callbacks now
        due, for the caller to run once it let go of the lock."""
        self._exposed.discard(seq)
        self._settled.notify_all()
        return self._due()

    def wait(self, mark: int, deadline: float) -> bool:
        """Wait until every envelope numbered below ``mark`` is settled, or ``deadline``."""
        with self._settled:
            return self._settled.wait_for(
                lambda: not any(seq < mark for seq in self._exposed),
                timeout=max(0.0, deadline - time.monotonic()),
            )

    def when(self, mark: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every envelope numbered below ``mark`` is settled."""
        with self._lock:
            self._waiters.append((mark, callback))
            due = self._due()
        for call in due:
            call()

    def _due(self) -> list[Callable[[], None]]:
        if not self._waiters:
            return []
        lowest = min(self._exposed, default=self.sequence)  # everything below it is settled
        due = [call for mark, call in self._waiters if mark <= lowest]
        if due:
            self._waiters = [(mark, call) for mark, call in self._waiters if mark > lowest]
        return due
