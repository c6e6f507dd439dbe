"""eddyline: an event-driven streaming data and feedback platform for AI-native apps.

The names an app, a data scientist or a retraining job needs::

    from eddyline import EventProducer, InteractionEvent, FeedbackEvent
    from eddyline import DriftSubscriber, DriftEvent
    from eddyline import Lake            # needs the [query] extra

Errors derive from :class:`EddylineError` (the tree is in ``schemas.errors``).
"""

from consumers.drift import DriftSubscriber
from schemas import (
    BaseEvent,
    BrokerError,
    DriftEvent,
    EddylineError,
    EnvelopeError,
    EventValidationError,
    FeedbackEvent,
    InteractionEvent,
    MissingExtraError,
    Noise,
    ProducerClosedError,
    Pseudonymize,
    Redact,
    SchemaError,
    TopicNotFoundError,
)
from streams.producer import EventProducer
from streams.settings import KafkaSettings, ProducerSettings, WorkerSettings

__version__ = "0.1.0"
__all__ = [
    "BaseEvent",
    "BrokerError",
    "DriftEvent",
    "DriftSubscriber",
    "EddylineError",
    "EnvelopeError",
    "EventProducer",
    "EventValidationError",
    "FeedbackEvent",
    "InteractionEvent",
    "KafkaSettings",
    "Lake",
    "MissingExtraError",
    "Noise",
    "ProducerClosedError",
    "ProducerSettings",
    "Pseudonymize",
    "Redact",
    "SchemaError",
    "TopicNotFoundError",
    "WorkerSettings",
]


def __getattr__(name: str) -> object:
    if name == "Lake":
        from consumers.lake import Lake

        return Lake
    raise AttributeError(name)
