"""Event contracts: models, privacy annotations, Arrow schemas, the envelope codec.

The bottom layer of eddyline: imports no Kafka client.
"""

from eddyline.schemas.annotations import (
    Noise,
    PrivacyAnnotation,
    Pseudonymize,
    RandomizedResponse,
    Redact,
)
from eddyline.schemas.errors import (
    BrokerError,
    EddylineError,
    EnvelopeError,
    EventValidationError,
    MissingExtraError,
    ProducerClosedError,
    SchemaError,
    TopicNotFoundError,
    UnknownSchemaError,
    UserError,
)
from eddyline.schemas.events import (
    BaseEvent,
    DriftEvent,
    FeedbackEvent,
    InteractionEvent,
    ModelEvent,
)
from eddyline.schemas.registry import REGISTRY, SchemaRegistry

__all__ = [
    "REGISTRY",
    "BaseEvent",
    "BrokerError",
    "DriftEvent",
    "EddylineError",
    "EnvelopeError",
    "EventValidationError",
    "FeedbackEvent",
    "InteractionEvent",
    "MissingExtraError",
    "ModelEvent",
    "Noise",
    "PrivacyAnnotation",
    "ProducerClosedError",
    "Pseudonymize",
    "RandomizedResponse",
    "Redact",
    "SchemaError",
    "SchemaRegistry",
    "TopicNotFoundError",
    "UnknownSchemaError",
    "UserError",
]
