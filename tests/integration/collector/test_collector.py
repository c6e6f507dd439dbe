"""The collector, with real clients: Segment's and RudderStack's Python libraries (PyPI),
headless Chromium running the documented snippet, and hostile raw HTTP. Events travel
collector -> Kafka -> worker -> Delta, and each lands once."""

from __future__ import annotations

import base64
import gzip
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from eddyline.consumers.lake import Lake
from eddyline.streams.collector.mapping import WriteKey
from eddyline.streams.collector.segment import event_id
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.collector.support import KEY, CollectorProcess
from tests.integration.helpers import deadletters, wait_for

pytestmark = pytest.mark.integration


def _ids(lake: Lake, table: str) -> list[str]:
    return (
        lake.read(table, columns=["event_id"])["event_id"].to_pylist()
        if table in lake.tables()
        else []
    )


def test_segment_and_rudderstack_clients_deliver_every_event_once(
    collector: CollectorProcess, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    import rudderstack.analytics.client as rudder
    import segment.analytics.client as segment

    key = WriteKey(name="web", key="unused", app_id="shop")  # event ids derive from the name
    errors: list[str] = []
    expected: dict[str, set[str]] = {"interaction": set(), "feedback": set()}
    seg = segment.Client(KEY, host=collector.url, on_error=lambda e, b: errors.append(repr(e)))
    rud = rudder.Client(KEY, host=collector.url, on_error=lambda e, b: errors.append(repr(e)))
    for i in range(400):
        client = seg if i % 2 else rud  # rudder gzips its bodies, Segment's does not
        mid = f"m-{i}-{uuid.uuid4()}"
        if i % 10 == 0:
            client.track(
                f"user-{i % 37}",
                "Feedback Given",
                {"item_id": f"sku-{i}", "rating": 4},
                message_id=mid,
            )
            expected["feedback"].add(str(event_id(key, mid)))
        else:
            name = ("Product Clicked", "Product Viewed")[i % 3 == 0]
            props = {
                "product_id": f"sku-{i}",
                "category": "news",
                "position": i % 7,
                "dwell_time_s": 2.5,
            }
            client.track(f"user-{i % 37}", name, props, message_id=mid)
            expected["interaction"].add(str(event_id(key, mid)))
    mid = str(uuid.uuid4())
    seg.page("user-3", "docs", "Intro", {"path": "/intro"}, message_id=mid)
    expected["interaction"].add(str(event_id(key, mid)))
    seg.identify("user-3", {"email": "someone@example.com"})  # accepted, dropped
    seg.track(anonymous_id="anon-1", event="Not In The Mapping")  # dead-lettered
    seg.track("user-4", "Product Clicked", {"product_id": "", "category": "news"})  # invalid
    seg.flush()
    rud.flush()
    assert errors == []
    lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
    for table, ids in expected.items():
        wait_for(lambda t=table: len(_ids(lake, t)) >= len(ids), 90, f"{len(ids)} {table} rows")
    time.sleep(2)
    for table, ids in expected.items():
        stored = _ids(lake, table)
        assert sorted(stored) == sorted(ids), table  # each once, no other
    assert "someone@example.com" not in json.dumps(
        lake.read("interaction").to_pylist(), default=str
    )
    kafka = KafkaSettings(
        bootstrap=worker_env["EDDYLINE_BOOTSTRAP"], namespace=worker_env["EDDYLINE_NAMESPACE"]
    )
    wait_for(lambda: len(deadletters(kafka)) >= 2, 30, "the collector's dead letters")
    reasons = sorted(d["reason"] for d in deadletters(kafka))
    assert reasons == ["event.unmapped", "row.invalid"]
    letters = json.dumps(deadletters(kafka))
    assert "Not In The Mapping" not in letters and "user-4" not in letters
    with urllib.request.urlopen(collector.url + "/metrics") as reply:
        metrics = reply.read().decode()
    assert 'eddyline_collector_dropped_calls_total{call="identify",write_key="web"} 1.0' in metrics
    assert (
        'eddyline_collector_rejected_events_total{reason="event.unmapped",write_key="web"} 1.0'
        in metrics
    )


class _Page(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_browser_sends_with_the_snippet_and_a_beacon_on_page_hide(
    collector: CollectorProcess,
    worker: WorkerProcess,
    worker_env: dict[str, str],
    tmp_path: Path,
    page_port: int,
) -> None:
    browser = shutil.which("chromium")
    assert browser, "Chromium is missing: `make test` installs Debian's chromium package"
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        f'<!doctype html><script src="{collector.url}/snippet.js" data-write-key="{KEY}"></script>'
        + """<script>
        eddyline.identify('browser-user');
        const item = (p) => ({product_id: p, category: 'news'});
        for (let i = 0; i < 25; i++) eddyline.track('Product Viewed', item('sku-' + i));
        eddyline.page('docs');  // the 26th: waits in the queue
        setTimeout(() => {  // then leaving: what waits goes by sendBeacon on page hide
          for (let i = 0; i < 4; i++) eddyline.track('Product Clicked', item('late-' + i));
          location.href = '/next.html';
        }, 300);
        </script>"""
    )
    (site / "next.html").write_text("<!doctype html><p>next</p>")
    handler = lambda *a: _Page(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Headless Chromium stays open after the page navigates away: it is stopped once
        # the events have landed (or the wait fails).
        chrome = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=5000",
                "--dump-dom",
                f"http://127.0.0.1:{page_port}/index.html",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
            wait_for(lambda: len(_ids(lake, "interaction")) >= 30, 90, "the browser's 30 events")
            time.sleep(2)
        finally:
            chrome.kill()
            chrome.wait(30)
        rows = lake.read("interaction", columns=["event_id", "item_id", "action"]).to_pylist()
    finally:
        server.shutdown()
    items = sorted(r["item_id"] for r in rows)
    assert len(rows) == 30 and len({r["event_id"] for r in rows}) == 30
    assert {f"late-{i}" for i in range(4)} <= set(items)  # sent by sendBeacon on page hide
    assert "/index.html" in items  # the page call


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {
            **json.loads(exc.read() or b"{}"),
            "retry_after": exc.headers.get("Retry-After"),
        }


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _track(i: int, user: str = "u-1", **extra: object) -> dict:
    props = {"product_id": f"sku-{i}", "category": "news", **extra}
    return {
        "type": "track",
        "event": "Product Clicked",
        "userId": user,
        "properties": props,
        "messageId": f"h-{i}",
    }


def test_hostile_input_gets_its_status_and_nothing_valid_is_lost(
    collector: CollectorProcess, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    batch = collector.url + "/v1/batch"
    ok = json.dumps({"batch": [_track(i) for i in range(10)]}).encode()
    assert _post(batch, ok, _auth("nope"))[0] == 401  # wrong key
    assert _post(batch, ok)[0] == 401  # no key
    huge = json.dumps({"batch": [_track(i, note="x" * 1000) for i in range(600)]}).encode()
    assert _post(batch, huge, _auth())[0] == 413  # over 500 KB
    assert _post(batch, b'{"batch": [', _auth())[0] == 400  # malformed
    deep = b'{"batch": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _post(batch, deep, _auth())[0] in (400, 413)  # nested too deep (or too large)
    deep = b'{"batch": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert _post(batch, deep, _auth())[0] == 400
    assert _post(batch, b'{"batch": ["\xff\xfe"]}', _auth())[0] == 400  # invalid UTF-8
    bomb = gzip.compress(b"[" + b" " * 200_000_000 + b"]", compresslevel=9)  # ~200 KB -> 200 MB
    status, body = _post(batch, bomb, {**_auth(), "Content-Encoding": "gzip"})
    assert status == 413 and body["code"] == "too_large"
    assert collector.rss_mb() < 400
    big_event = json.dumps({"batch": [_track(0, note="y" * 40_000)]}).encode()
    assert _post(batch, big_event, _auth())[0] == 200  # Segment answers 200; dead-lettered
    limited = json.dumps({"batch": [_track(i) for i in range(100)]}).encode()
    status, body = _post(batch, limited, _auth("slow-key"))
    assert status == 429 and int(body["retry_after"]) >= 1
    # A slow-loris client: headers, then a trickle; the collector answers 408 and stays up.
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(3)
        reply = sock.recv(200)
    assert b" 408 " in reply.split(b"\r\n")[0]
    # Everything valid around them lands, once.
    status, _ = _post(batch, ok, _auth())
    assert status == 200
    lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
    wait_for(lambda: len(_ids(lake, "interaction")) >= 10, 60, "the valid batch")
    time.sleep(2)
    assert len(_ids(lake, "interaction")) == 10
    assert collector.proc is not None and collector.proc.poll() is None


def test_the_native_endpoint_takes_eddyline_json_and_refuses_bad_rows_whole(
    collector: CollectorProcess, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    url = collector.url + "/v1/events/interaction"
    rows = [
        {
            "user_id": f"n-{i}",
            "item_id": f"sku-{i}",
            "item_category": "news",
            "action": "click",
            "dwell_time_s": 1.0,
        }
        for i in range(20)
    ]
    status, body = _post(
        url, json.dumps(rows).encode(), {**_auth(), "Content-Type": "application/json"}
    )
    assert (status, body) == (200, {"accepted": 20})
    bad = [*rows[:3], {**rows[0], "action": "teleport"}]
    status, body = _post(url, json.dumps(bad).encode(), _auth())
    assert status == 400 and "action" in body["message"]
    assert _post(collector.url + "/v1/events/nope", b"{}", _auth())[0] == 404
    lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
    wait_for(lambda: len(_ids(lake, "interaction")) >= 20, 60, "the native events")
    time.sleep(2)
    assert len(_ids(lake, "interaction")) == 20


NODE_SENDER = """
const { Analytics } = require('@segment/analytics-node');
const analytics = new Analytics({
  writeKey: process.env.WRITE_KEY, host: process.env.COLLECTOR, flushAt: 50, flushInterval: 200,
});
analytics.on('error', (err) => { console.error('error', err); process.exitCode = 1; });
for (let i = 0; i < 300; i++) {
  analytics.track({
    userId: 'node-' + (i % 7), event: 'Product Clicked', messageId: 'node-' + i,
    properties: { product_id: 'sku-' + i, category: 'news', position: i % 5 },
  });
}
analytics.closeAndFlush().then(() => console.log('flushed'));
"""


def test_segments_node_library_delivers_every_event_once(
    collector: CollectorProcess, worker: WorkerProcess, worker_env: dict[str, str], tmp_path: Path
) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "node and npm are needed (Node 20 from the distribution)"
    app = tmp_path / "node-app"
    app.mkdir()
    subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "@segment/analytics-node@3.1.0"],
        cwd=app, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (app / "send.js").write_text(NODE_SENDER)
    env = {**os.environ, "WRITE_KEY": KEY, "COLLECTOR": collector.url}
    done = subprocess.run(
        [node, "send.js"], cwd=app, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "flushed" in done.stdout, done.stderr
    key = WriteKey(name="web", key="unused", app_id="shop")
    expected = sorted(str(event_id(key, f"node-{i}")) for i in range(300))
    lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
    wait_for(lambda: len(_ids(lake, "interaction")) >= 300, 90, "the Node client's 300 events")
    time.sleep(2)
    assert sorted(_ids(lake, "interaction")) == expected
