"""A client whose answers are lost retries, and the pipeline keeps each event once: Segment's
Python library behind a proxy that drops every other answer of the collector."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
import uuid

import pytest

from eddyline.consumers.lake import Lake
from eddyline.streams.collector.mapping import WriteKey
from eddyline.streams.collector.segment import event_id
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.collector.support import KEY, CollectorProcess
from tests.integration.collector.test_collector import _ids
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


class _DroppingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the collector and, for every other one, drops the
    collector's answer: the client sees its connection closed after the events were
    accepted, as behind a flaky load balancer, and sends them again."""

    upstream = ""
    forwarded = 0
    dropped = 0  # answers dropped
    dropped_events = 0  # the events of the batches whose answer was dropped

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        host, port = self.upstream.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request("POST", self.path, body, headers)
        reply = conn.getresponse()
        answer = reply.read()
        cls = type(self)
        cls.forwarded += 1
        if reply.status == 200 and cls.forwarded % 2:
            cls.dropped += 1
            cls.dropped_events += len(json.loads(body)["batch"])
            self.close_connection = True  # no answer: the client retries
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_a_client_whose_answers_are_dropped_retries_and_each_event_lands_once(
    collector: CollectorProcess, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    import segment.analytics.client as segment

    _DroppingProxy.upstream = collector.url.removeprefix("http://")
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DroppingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        errors: list[str] = []
        client = segment.Client(
            KEY,
            host=f"http://127.0.0.1:{proxy.server_address[1]}",
            upload_size=50,
            on_error=lambda e, b: errors.append(repr(e)),
        )
        key = WriteKey(name="web", key="unused", app_id="shop")
        expected = set()
        for i in range(300):
            mid = f"retry-{i}-{uuid.uuid4()}"
            props = {"product_id": f"sku-{i}", "category": "news", "dwell_time_s": 1.5}
            client.track(f"user-{i % 11}", "Product Clicked", props, message_id=mid)
            expected.add(str(event_id(key, mid)))
        client.flush()
    finally:
        proxy.shutdown()
    assert errors == [] and _DroppingProxy.dropped >= 3  # every batch got through, some twice
    lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
    wait_for(lambda: len(_ids(lake, "interaction")) >= len(expected), 90, "300 rows")
    repeated = 'eddyline_worker_events_repeated_total{stream="interaction"}'

    def repeats() -> float:
        found = [x for x in (worker.metrics() or "").splitlines() if x.startswith(repeated)]
        return float(found[0].split()[-1]) if found else 0.0

    # every event of a batch whose answer was lost came twice; the second is dropped
    wait_for(lambda: repeats() >= _DroppingProxy.dropped_events, 30, "the repeats counted")
    time.sleep(3)  # anything doubled would have landed by now
    stored = _ids(lake, "interaction")
    assert sorted(stored) == sorted(expected)  # each messageId once
    assert repeats() == _DroppingProxy.dropped_events
