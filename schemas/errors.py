"""The eddyline error tree.

Every error eddyline raises on purpose derives from :class:`EddylineError`; where one
wraps a library's error it inherits from that error too, so either can be caught::

    EddylineError                    exit code 1: a failure
    ├── UserError                    exit code 2: the caller fixes their input
    │   ├── SchemaError              a model or annotation that cannot work (raised at definition)
    │   │   └── UnknownSchemaError   a schema id the registry does not know
    │   ├── SchemaMismatchError      ValueError too: columns that are not the model's
    │   ├── EventValidationError     ValueError too: an event failed validation at ``emit``
    │   ├── MissingExtraError        ImportError too: an optional extra is not installed
    │   ├── LearnerSpecError         a learner spec that cannot work
    │   ├── StreamConfigError        a stream without an event type, an event module that fails
    │   ├── MappingError             a collector mapping that cannot work (names the file)
    │   ├── LakeError                DeltaError too: a table or version cannot be read
    │   │   └── TableNotFoundError   deltalake's TableNotFoundError too
    │   ├── QueryError               duckdb's Error too: SQL over the lake failed
    │   ├── StorageError             a storage location or object store that cannot work
    │   └── RetrainBudgetError       retraining would pass the total ε
    ├── EnvelopeError                a Kafka message that is not a valid envelope (has ``reason``)
    ├── BrokerError                  Kafka could not be reached or refused a request
    │   └── TopicNotFoundError       a topic the caller needs does not exist
    ├── ProducerClosedError          ``emit`` after ``close``
    ├── SpoolFullError               Kafka away so long the SDK's spool is full
    ├── NotEnoughDataError           too few rows after a change to retrain yet
    └── PredictionError              a worker refused or could not answer a prediction

Exit codes: the CLI prints any of them as one line and exits with the error's
``exit_code``: 2 for what the caller can fix (a bad schema, spec, SQL, table name, version,
a missing extra: the message says what to change), 1 for a failure (Kafka away, a refused
request, a full spool).

The classes live where they are raised (the tree names each module in ``__module__``:
``eddyline.streams.sdk.spool``, ``eddyline.online_learning.spec``,
``eddyline.schemas.streams``, ``eddyline.schemas.storage``, ``eddyline.consumers.lake``,
``eddyline.consumers.retrain``, ``eddyline.predict``); the rest are here. This module sits
in ``schemas`` (the bottom layer) so every package can raise these;
``eddyline`` re-exports the ones an app or a data scientist catches. The errors of the
[query] extra are defined beside the library they wrap, so the base install never imports
it.
"""

from __future__ import annotations


class EddylineError(Exception):
    """Root of every error eddyline raises on purpose."""

    exit_code = 1  # the CLI's: 1 a failure, 2 what the caller can fix


class UserError(EddylineError):
    """Marks an error the caller fixes by changing their input (exit code 2)."""

    exit_code = 2


class SchemaError(UserError):
    """An event model or privacy annotation that cannot work."""


class UnknownSchemaError(SchemaError):
    """A schema id (``name:version``) that is not registered."""

    def __init__(self, schema_id: str) -> None:
        super().__init__(
            f"unknown schema {schema_id!r}: register the event model "
            "(subclass BaseEvent with event_name/event_version) before using it"
        )
        self.schema_id = schema_id


class EventValidationError(UserError, ValueError):
    """An event failed validation; ``field`` names the first bad field."""

    def __init__(self, message: str, *, field: str | None, reason: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class EnvelopeError(EddylineError):
    """A Kafka message that cannot be decoded; ``reason`` is a dead-letter code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(EddylineError):
    """Kafka could not be reached, or refused a request."""


class TopicNotFoundError(BrokerError):
    """A topic the caller needs does not exist."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic!r} does not exist: start a worker (`eddyline worker run`) "
            "or create it with `eddyline topics create`"
        )
        self.topic = topic


class ProducerClosedError(EddylineError):
    """``emit`` was called after ``close``."""


class MissingExtraError(UserError, ImportError):
    """An optional extra is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(f"{module} needs the [{extra}] extra: pip install 'eddyline[{extra}]'")
        self.extra = extra


def require_extra(extra: str, what: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming the ``pip install`` to run unless every one of
    ``modules`` imports (``what`` is the part of eddyline that needs them)."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(extra, what)
