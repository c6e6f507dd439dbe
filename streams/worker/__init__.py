"""The Faust worker (needs the [worker] extra): the stages (privatize, lake, learn, the
table writers) and the wiring that feeds them from Kafka. Import ``eddyline.streams.worker.app``
for ``build_app``/``run_worker``; nothing is imported here."""
