"""Streams as configuration: which event types a worker processes, and where the ones that
are not built in come from.

A stream is an event type's name (``interaction``, ``feedback``, or a ``BaseEvent``
subclass of yours with its own ``event_name``); each gets a raw and a private topic, a Delta
table, its privacy policy (the fields' annotations) and the learner specs that name it.
Event types that are not built in come from **event modules**: importable module names
(``my_app.events``) or paths to Python files (``./ride_events.py``), imported before the
streams are checked (``EDDYLINE_EVENT_MODULES``, ``EDDYLINE_STREAMS``; docs/streams.md).

Examples:
    >>> check_streams("interaction, feedback")
    ['interaction', 'feedback']
    >>> check_streams("interaction,rides")
    Traceback (most recent call last):
    ...
    eddyline.schemas.streams.StreamConfigError: no event type 'rides' for EDDYLINE_STREAMS ...
    >>> load_event_modules("no_such_module_here")
    Traceback (most recent call last):
    ...
    eddyline.schemas.streams.StreamConfigError: cannot import event module 'no_such_module_here'...
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from eddyline.schemas.errors import UserError
from eddyline.schemas.registry import REGISTRY

BUILTIN_STREAMS = "interaction,feedback"
_loaded: dict[str, str] = {}  # module or path -> the module name it was imported as


class StreamConfigError(UserError):
    """A stream without an event type, or an event module that cannot be imported."""


def _split(names: str | list[str]) -> list[str]:
    items = names.split(",") if isinstance(names, str) else names
    return [n.strip() for n in items if n.strip()]


def load_event_modules(modules: str | list[str]) -> list[str]:
    """Import each event module (a module name, or a ``.py`` file by path) once; their
    ``BaseEvent`` subclasses register themselves. The names imported, in order."""
    imported = []
    for item in _split(modules):
        if item not in _loaded:
            _loaded[item] = _import(item)
        imported.append(_loaded[item])
    return imported


def _import(item: str) -> str:
    try:
        if item.endswith(".py"):
            path = Path(item).resolve()
            # a stable name per file: the same file imported twice registers its events once
            name = "eddyline_events_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return name
        importlib.import_module(item)
        return item
    except Exception as exc:  # an event module's own error, shown in one line
        raise StreamConfigError(
            f"cannot import event module {item!r}: {type(exc).__name__}: {exc}"
        ) from None


def check_streams(streams: str | list[str]) -> list[str]:
    """The stream names, each an event type the registry knows (after the event modules are
    loaded); :class:`StreamConfigError` naming the first unknown one."""
    names = _split(streams)
    if not names:
        raise StreamConfigError("EDDYLINE_STREAMS names no stream")
    known = set(REGISTRY.names())
    for name in names:
        if name not in known:
            raise StreamConfigError(
                f"no event type {name!r} for EDDYLINE_STREAMS (registered: "
                f"{', '.join(sorted(known))}); define a BaseEvent subclass with "
                f"event_name = {name!r} in a module named by EDDYLINE_EVENT_MODULES"
            )
    if len(set(names)) != len(names):
        raise StreamConfigError(f"EDDYLINE_STREAMS names a stream twice: {', '.join(names)}")
    return names
