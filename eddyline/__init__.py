"""eddyline: an event-driven streaming data and feedback platform for AI-native apps.

The names an app, a data scientist or a retraining job needs::

    from eddyline import EventProducer, InteractionEvent, FeedbackEvent
    from eddyline import DriftSubscriber, DriftEvent
    from eddyline import Lake            # needs the [query] extra

Errors derive from :class:`EddylineError` (the tree is in ``schemas.errors``).
"""

from consumers.drift import DriftSubscriber
from eddyline.predict import Prediction, PredictionError, Predictor
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
    RandomizedResponse,
    Redact,
    SchemaError,
    TopicNotFoundError,
)
from streams.aio import AsyncEventProducer
from streams.producer import DeliveryReport, EventProducer
from streams.settings import KafkaSettings, ProducerSettings, WorkerSettings
from streams.spool import SpoolFullError

__version__ = "0.1.0"
__all__ = [
    "AsyncEventProducer",
    "BaseEvent",
    "BrokerError",
    "DeliveryReport",
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
    "Prediction",
    "PredictionError",
    "Predictor",
    "ProducerClosedError",
    "ProducerSettings",
    "Pseudonymize",
    "RandomizedResponse",
    "Redact",
    "SchemaError",
    "SpoolFullError",
    "TopicNotFoundError",
    "WorkerSettings",
]


def __getattr__(name: str) -> object:
    if name == "Lake":
        from consumers.lake import Lake

        return Lake
    raise AttributeError(name)
