"""eddyline: an event-driven streaming data and feedback platform for AI-native apps.

The names an app, a data scientist or a retraining job needs::

    from eddyline import EventProducer, InteractionEvent, FeedbackEvent
    from eddyline import DriftSubscriber, DriftEvent
    from eddyline import Lake            # needs the [query] extra

Errors derive from :class:`EddylineError` (the tree is in ``schemas.errors``).
"""

from eddyline.consumers.drift import DriftSubscriber
from eddyline.predict import Prediction, PredictionError, Predictor
from eddyline.schemas import (
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
    UserError,
)
from eddyline.schemas.storage import StorageError
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings, WorkerSettings
from eddyline.streams.sdk.aio import AsyncEventProducer
from eddyline.streams.sdk.producer import DeliveryReport, EventProducer
from eddyline.streams.sdk.spool import SpoolFullError

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
    "Governance",
    "InteractionEvent",
    "KafkaSettings",
    "Lake",
    "LakeError",
    "MissingExtraError",
    "Noise",
    "Prediction",
    "PredictionError",
    "Predictor",
    "ProducerClosedError",
    "ProducerSettings",
    "Pseudonymize",
    "QueryError",
    "RandomizedResponse",
    "Redact",
    "SchemaError",
    "SpoolFullError",
    "StorageError",
    "TableNotFoundError",
    "TopicNotFoundError",
    "UserError",
    "WorkerSettings",
]


_QUERY = ("Lake", "LakeError", "QueryError", "TableNotFoundError")  # the [query] extra


def __getattr__(name: str) -> object:
    if name in _QUERY:
        from eddyline.consumers import lake

        return getattr(lake, name)
    if name == "Governance":  # forget, withdraw consent: the [worker] extra
        from eddyline.streams.worker.governance import Governance

        return Governance
    raise AttributeError(name)
