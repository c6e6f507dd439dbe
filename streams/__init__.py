"""Kafka, by role: ``sdk`` (what apps embed), ``worker`` (the Faust worker; the [worker]
extra), ``kafka`` (settings, topics, the local broker). Nothing is imported here: an app
importing the SDK pays for the SDK only."""
