"""What the collector refuses before it reads an event: bodies too large, too slow, not
gzip, not UTF-8, not JSON or nested too deeply, and requests over a write key's rate. Each
is an ``HttpError``: a status and a Segment-style ``{"code", "message"}``."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from typing import Any

import orjson
from aiohttp import web


class HttpError(Exception):
    """An answer other than 200: status, Segment-style code, one-line message."""

    def __init__(self, status: int, code: str, message: str, retry_after: float = 0) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class Bucket:
    """A token bucket: ``rate`` events per second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, 2 * rate
        self.tokens, self.at = self.capacity, time.monotonic()

    def take(self, n: int) -> float:
        """Take ``n`` tokens: 0, or the seconds until there would be enough (none taken)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, gunzipped, within ``limit`` bytes (before and after inflating) and
    ``timeout_s`` (a client that trickles it is answered 408)."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(65_536):
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, "too_large", f"the body is over {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(408, "timeout", "the body took too long to arrive") from None
    body = b"".join(chunks)
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # bounded: a gzip bomb stops here
        try:
            body = inflate.decompress(body, limit + 1)
        except zlib.error:
            raise HttpError(400, "bad_gzip", "the body is not valid gzip") from None
        if len(body) > limit or inflate.unconsumed_tail:
            raise HttpError(413, "too_large", f"the body inflates to over {limit:,} bytes")
    return body


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 naming what is wrong with it. orjson reads it (~4x
    faster); what orjson refuses is read again by ``json``, whose rules (big integers,
    NaN) and errors the collector's answers follow."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "bad_encoding", "the body is not UTF-8") from None
    except RecursionError:
        raise HttpError(400, "too_deep", "the JSON is nested too deeply") from None
    except ValueError:
        raise HttpError(400, "bad_json", "the body is not JSON") from None
