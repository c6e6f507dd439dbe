"""The cyclic garbage collector's settings for the long-running processes (the worker and
the collector).

Python collects its youngest generation every 700 new container objects by default. The
worker's intake makes several containers a message (confluent-kafka's ``Message``, its
headers' list and tuples, decoded JSON), so a 20,000-message fetch set off ~100 young
collections, whose survivors (the fetch itself, still being processed) were promoted and
walked again by the older generations: headers cost ~2.2 µs a message with the default
thresholds and ~0.6 µs with 100,000 (bench/RESULTS.md, "pipeline"; the JSON drain ran
1.29x faster). Start-up's objects (modules, the app, its settings) are frozen out of every
collection: they live as long as the process.

Cycles are still collected, only later: at most ``young`` new containers wait for their
first collection (~10 MB at ~100 bytes each)."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("eddyline")


def tune_gc(young: int) -> None:
    """Freeze every object alive now (never collected again) and collect the youngest
    generation every ``young`` new containers (0: nothing changed, Python's defaults).

    Examples:
        >>> before = gc.get_threshold()
        >>> tune_gc(50_000)
        >>> gc.get_threshold()[0], gc.get_freeze_count() > 0
        (50000, True)
        >>> gc.unfreeze(); gc.set_threshold(*before)  # this test's process as it was
        >>> tune_gc(0)
        >>> gc.get_threshold() == before, gc.get_freeze_count()
        (True, 0)
    """
    if young <= 0:
        return
    gc.collect()  # what start-up left as garbage goes now, not into the permanent generation
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)
    log.debug("gc: %d objects frozen; young generation every %d", gc.get_freeze_count(), young)
