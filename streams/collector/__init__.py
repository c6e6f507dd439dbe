"""The collector: an HTTP front door for apps in any language, browsers and phones
(``eddyline collector run``; docs/collector.md). It speaks Segment's HTTP Tracking API
(``segment``, routed by ``mapping``) and eddyline's own JSON and Arrow (``server``), and
sends through the SDK. Needs the ``[collector]`` extra (aiohttp, PyYAML)."""

from eddyline.schemas.errors import require_extra

require_extra("collector", "eddyline.streams.collector", "aiohttp", "yaml")
