"""Faust's Kafka transport (aiokafka), with the consumer's fetch wait as a setting.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500``, fixed. aiokafka sends
one fetch at a time to a broker, for the partitions that have no fetched records waiting
to be handed over, and the broker may hold that fetch up to the wait. With one broker,
that fetch often named only a partition that was empty when it was sent; found with
aiokafka's debug log: while the privatize agent wrote a backlog to the private topic, the
one fetch in flight named a single private partition and came back after the full 1.5 s,
and for that time no other partition was fetched; the lake got no envelope and made no
Delta commit until the backlog was privatised. Waiting at most ``fetch_max_wait_ms``
(100 ms by default: ``WorkerSettings.fetch_max_wait_ms``) bounds that stall; an idle
worker then sends ~10 empty fetches a second.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka


def kafka_transport(app: Any, fetch_max_wait_ms: int) -> faust_aiokafka.Transport:
    """A transport for ``app`` (set as ``app.transport`` before any topic is made) whose
    worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it makes its fetcher (aiokafka 0.14).
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WorkerConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = WorkerConsumer

    return Transport(app.conf.broker_consumer, app)


__all__ = ["kafka_transport"]
