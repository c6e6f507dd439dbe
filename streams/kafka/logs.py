"""Kafka clients' logs, through Python logging, and at most one line a minute of a kind.

librdkafka (every confluent-kafka client) and aiokafka (the worker's consumer) log each
failed connection attempt; with a broker away that is several lines a second per client.
Every client eddyline makes logs to ``eddyline.kafka`` (librdkafka, through the ``logger``
setting) or its own logger (aiokafka), and ``OncePerInterval`` lets one line of each kind
through per interval, counting the ones it held back.

Examples:
    >>> import logging
    >>> f = OncePerInterval(60.0, clock=lambda: 0.0)
    >>> def rec(msg): return logging.LogRecord("k", logging.WARNING, "", 0, msg, None, None)
    >>> f.filter(rec("[thrd:1] 127.0.0.1:9092 Connect failed (after 0ms)"))
    True
    >>> f.filter(rec("[thrd:2] 127.0.0.1:9092 Connect failed (after 3ms)"))
    False
    >>> g = OncePerInterval(60.0, clock=lambda: 0.0, only=("aiokafka",))
    >>> [g.filter(rec("drift: click 0.2 -> 0.7")) for _ in range(2)]  # not a Kafka client's
    [True, True]
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

_VARYING = re.compile(r"\[thrd:[^\]]*\]|\d+")


class OncePerInterval(logging.Filter):
    """Passes the first record of each kind (logger, level, message without its numbers)
    per ``interval_s``; the next one that passes says how many were held back. ``only``:
    the logger names (and their children) it limits; every other record passes."""

    def __init__(
        self,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        only: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.interval_s, self._clock = interval_s, clock
        self._only = None if only is None else tuple(name + "." for name in only)
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self._only is not None and not (record.name + ".").startswith(self._only):
            return True
        kind = (record.name, record.levelno, _VARYING.sub("#", record.getMessage())[:120])
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} like it in {self.interval_s:.0f}s)"
            record.args = ()
        return True


# The Kafka clients' loggers only: eddyline's own lines (a drift, an ownership change) are
# each worth reading, however alike.
_FILTER = OncePerInterval(only=("eddyline.kafka", "aiokafka", "faust.transport"))


def kafka_logger() -> logging.Logger:
    """The logger librdkafka's lines go to (``eddyline.kafka``), quietened."""
    logger = logging.getLogger("eddyline.kafka")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def quieten_handlers() -> None:
    """Apply the filter to every record the root logger's handlers write: child loggers
    (aiokafka.conn, aiokafka.consumer...) do not inherit a parent logger's filters."""
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
