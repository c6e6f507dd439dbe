"""The collector's HTTP server (aiohttp): Segment's Tracking API, eddyline's native
endpoint, CORS and beacons for browsers, and nothing accepted lost.

A request's events go through the SDK (``EventProducer``: validation, murmur2 partitioning,
Arrow envelopes, the spool); the answer waits until they are durable (``committer``). A 200
means in Kafka or in the spool; a 503 means not yet (the client retries: the same
``messageId`` is the same ``event_id``). docs/collector.md lists every status code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from confluent_kafka import Producer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eddyline.schemas.deadletter import DeadLetter
from eddyline.schemas.envelope import ARROW, decode
from eddyline.schemas.errors import EddylineError, EventValidationError
from eddyline.schemas.registry import REGISTRY
from eddyline.schemas.source import SourceRef
from eddyline.streams.collector.committer import Committer, not_durable
from eddyline.streams.collector.gather import gather
from eddyline.streams.collector.limits import Bucket, HttpError, parse_json, read_body
from eddyline.streams.collector.mapping import Mapping, WriteKey
from eddyline.streams.collector.segment import CALLS
from eddyline.streams.collector.sending import rows_to_columns
from eddyline.streams.heap import tune_gc
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.sdk.producer import EventProducer

log = logging.getLogger("eddyline.collector")
SNIPPET = Path(__file__).with_name("snippet.js")
_HEADERS: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]
_ALLOW_HEADERS = "Content-Type, Authorization, Content-Encoding"


class CollectorSettings(BaseSettings):
    """``EDDYLINE_COLLECTOR_*`` (docs/collector.md)."""

    model_config = SettingsConfigDict(env_prefix="EDDYLINE_COLLECTOR_", frozen=True)

    host: str = "0.0.0.0"  # noqa: S104 - a server for apps and browsers
    port: int = Field(default=8088, ge=0, le=65535)
    mapping: str | None = None  # the YAML mapping; None: the shipped default.yaml
    max_event_bytes: int = 32_000  # Segment's limits
    max_batch_bytes: int = 500_000
    read_timeout_s: float = Field(default=10.0, gt=0)  # a body slower than this: 408
    durable_timeout_s: float = Field(default=10.0, gt=0)  # not durable by then: 503
    # Requests that arrive within this window share one emit, one seal and one wait (and
    # the producer sends at once: librdkafka's linger is 0 unless extra_config says).
    commit_window_ms: float = Field(default=2.0, ge=0)
    max_waiting_events: int = Field(default=200_000, ge=1)  # more waiting: 503
    # The cyclic GC's young generation (0: Python's 700; streams/heap.py).
    gc_young_threshold: int = Field(default=100_000, ge=0)


def _metrics(registry: CollectorRegistry) -> dict[str, Any]:
    def counter(name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(f"eddyline_collector_{name}", doc, labels, registry=registry)

    return {
        "requests": counter("requests", "HTTP requests answered", ["endpoint", "status"]),
        "events": counter("events", "Events accepted", ["write_key", "stream"]),
        "rejected": counter(
            "rejected_events", "Events dead-lettered or refused", ["write_key", "reason"]
        ),
        "dropped": counter(
            "dropped_calls",
            "identify/alias/group calls accepted and dropped",
            ["write_key", "call"],
        ),
        "latency": Histogram(
            "eddyline_collector_request_seconds",
            "Request latency, to the durable answer",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        ),
    }


class Collector:
    """The server's state: mapping, producer, limits, metrics (see the module docstring)."""

    def __init__(
        self,
        mapping: Mapping,
        settings: CollectorSettings | None = None,
        kafka: KafkaSettings | None = None,
        producer_settings: ProducerSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.mapping, self.settings = mapping, settings or CollectorSettings()
        kafka = kafka or KafkaSettings()
        # The committer batches a window's requests; a linger in librdkafka would only add
        # its wait to every answer (bench/RESULTS.md, collector).
        self.kafka = kafka.model_copy(
            update={"extra_config": {"linger.ms": 0, **kafka.extra_config}}
        )
        self.registry = registry or CollectorRegistry()
        self.producer = EventProducer(
            producer_settings or ProducerSettings(), kafka=self.kafka, registry=self.registry
        )
        self.committer = Committer(
            self.producer, self.settings.commit_window_ms / 1000, self.settings.durable_timeout_s
        )
        self.m = _metrics(self.registry)
        self.buckets = {k.name: Bucket(k.rate_per_s) for k in mapping.write_keys}
        self.origins = {o for k in mapping.write_keys for o in k.origins}
        self._dead = Producer(self.kafka.librdkafka({"linger.ms": 50}))
        self._deadletter_topic = Topics(self.kafka.namespace).deadletter
        self._requests = 0

    # -- the app ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_batch_bytes, middlewares=[self._middleware]
        )
        for call in sorted(CALLS):
            app.router.add_post(f"/v1/{call}", self._segment_one(call))
        app.router.add_post("/v1/batch", self._batch)
        app.router.add_post("/v1/events/{stream}", self._native)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/health", self._health)
        app.router.add_get("/snippet.js", self._snippet)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        app["committer"] = asyncio.create_task(self.committer.run())

    async def _stop(self, app: web.Application) -> None:
        app["committer"].cancel()
        await asyncio.to_thread(self.producer.close, 30.0)
        await asyncio.to_thread(self._dead.flush, 10.0)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        endpoint = (
            request.match_info.route.resource.canonical
            if request.match_info.route.resource
            else "other"
        )
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":  # a browser's preflight
            response = web.Response(status=204 if origin in self.origins else 403)
            if origin in self.origins:
                response.headers.update(
                    {
                        "Access-Control-Allow-Origin": origin,
                        "Access-Control-Allow-Methods": "POST",
                        "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                        "Access-Control-Max-Age": "600",
                        "Vary": "Origin",
                    }
                )
        else:
            try:
                response = await handler(request)
            except HttpError as exc:
                response = web.json_response(
                    {"code": exc.code, "message": exc.message}, status=exc.status
                )
                if exc.retry_after:
                    response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
            except web.HTTPException as exc:  # aiohttp's own (404, 405, 413 from its limit)
                response = web.json_response(
                    {
                        "code": exc.reason.lower().replace(" ", "_"),
                        "message": exc.text or exc.reason,
                    },
                    status=exc.status,
                )
            if origin is not None and origin in self.origins and request.get("origin_ok", True):
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Vary"] = "Origin"
        self.m["requests"].labels(endpoint, str(response.status)).inc()
        self.m["latency"].labels(endpoint).observe(time.perf_counter() - started)
        return response

    # -- reading a request -----------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        body = await read_body(request, self.settings.max_batch_bytes, self.settings.read_timeout_s)
        request["body_bytes"] = len(body)
        return body

    async def _json(self, request: web.Request) -> Any:
        return parse_json(await self._body(request))

    def _key(self, request: web.Request, body: Any) -> WriteKey:
        """The write key: HTTP Basic's user, else ``writeKey`` in the body."""
        secret = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                secret = base64.b64decode(auth[6:], validate=True).decode().split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                secret = None
        if not secret and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
            secret = body["writeKey"]
        key = self.mapping.key_of(secret) if secret else None
        if key is None:
            raise HttpError(401, "unauthorized", "no write key, or an unknown one")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in key.origins:
            request["origin_ok"] = False
            raise HttpError(403, "forbidden_origin", "this write key does not allow the origin")
        return key

    def _admit(self, key: WriteKey, events: int) -> None:
        wait = self.buckets[key.name].take(events)
        if wait:
            self.m["rejected"].labels(key.name, "rate_limited").inc(events)
            raise HttpError(429, "rate_limited", "over the write key's rate", retry_after=wait)
        if self.committer.waiting_events + events > self.settings.max_waiting_events:
            raise HttpError(503, "busy", "too many events waiting to be durable", retry_after=1)

    # -- Segment -----------------------------------------------------------------------------

    def _segment_one(self, call: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            body = await self._json(request)
            if not isinstance(body, dict):
                raise HttpError(400, "bad_request", "the body must be a JSON object")
            return await self._segment(request, [{**body, "type": call}], body)

        return handle

    async def _batch(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise HttpError(400, "bad_request", "the body must be an object with a batch array")
        return await self._segment(request, body["batch"], body)

    async def _segment(
        self, request: web.Request, messages: list[Any], body: dict[str, Any]
    ) -> web.Response:
        key = self._key(request, body)
        self._admit(key, len(messages))
        received = datetime.now(UTC)
        self._requests += 1
        source = SourceRef(f"collector/{key.name}", 0, self._requests)
        small = request.get("body_bytes", 0) <= self.settings.max_event_bytes  # all fit
        converted, rejected, dropped = gather(
            messages,
            key,
            self.mapping,
            body.get("sentAt"),
            received,
            None if small else self.settings.max_event_bytes,
        )
        for call, n in dropped.items():
            self.m["dropped"].labels(key.name, call).inc(n)
        dead = [why.letter(source, i) for i, why in rejected]
        taken = await self.committer.submit(converted, source, dead) if converted else {}
        for model, n in taken.items():
            self.m["events"].labels(key.name, model.event_name).inc(n)
        self._send_dead(key, dead)
        return web.json_response({"success": True})

    def _send_dead(self, key: WriteKey, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self.m["rejected"].labels(key.name, str(letter.reason)).inc()
            self._dead.produce(self._deadletter_topic, value=letter.to_json(), headers=[*_HEADERS])
        self._dead.poll(0)

    async def _durable(self, events: int) -> None:
        if events and not await self.committer.durable(events):
            raise not_durable()

    # -- native ------------------------------------------------------------------------------

    async def _native(self, request: web.Request) -> web.Response:
        """``POST /v1/events/<stream>``: eddyline's JSON wire form (one event or an array) or
        an Arrow IPC stream; all events or none (400 names the field and the rule)."""
        stream = request.match_info["stream"]
        try:
            model = REGISTRY.latest(stream)
        except EddylineError:
            raise HttpError(404, "unknown_stream", "no such stream") from None
        kind = request.headers.get("Content-Type", "")
        if kind.startswith(ARROW):
            body = await self._body(request)
            key = self._key(request, None)
            try:
                table = decode(body, [("content-type", ARROW.encode())]).table
                assert table is not None
            except EddylineError as exc:
                raise HttpError(400, "bad_arrow", str(exc).splitlines()[0]) from None
            self._admit(key, table.num_rows)
            try:
                n = self.producer.emit_many(model, table)
            except EventValidationError as exc:
                raise HttpError(400, "invalid", str(exc)) from None
        else:
            payload = await self._json(request)
            key = self._key(request, payload)
            rows = payload if isinstance(payload, list) else [payload]
            self._admit(key, len(rows))
            try:
                n = self.producer.emit_many(model, rows_to_columns(rows, key.app_id))
            except EventValidationError as exc:
                raise HttpError(400, "invalid", str(exc)) from None
        self.m["events"].labels(key.name, stream).inc(n)
        await self._durable(n)
        return web.json_response({"accepted": n})

    # -- pages ------------------------------------------------------------------------------

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "waiting_events": self.committer.waiting_events})

    async def _snippet(self, request: web.Request) -> web.Response:
        return web.Response(text=SNIPPET.read_text(), content_type="text/javascript")


async def serve(collector: Collector) -> None:
    """Run until cancelled (``eddyline collector run``)."""
    runner = web.AppRunner(collector.app(), auto_decompress=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, collector.settings.host, collector.settings.port)
    await site.start()
    tune_gc(collector.settings.gc_young_threshold)  # start-up is done: freeze what it made
    log.info("collector on %s:%d", collector.settings.host, collector.settings.port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
