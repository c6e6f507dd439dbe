// eddyline's browser snippet (docs/collector.md): Segment-style track/page calls, batched,
// sent to the collector that serves this file; on page hide, navigator.sendBeacon.
//   <script src="https://collector.example/snippet.js" data-write-key="YOUR_KEY"></script>
//   <script>eddyline.track("Product Clicked", {product_id: "sku-1", category: "news"});</script>
(function (w, d) {
  "use strict";
  var script = d.currentScript;
  var host = script.src.replace(/\/snippet\.js.*$/, "");
  var key = script.getAttribute("data-write-key");
  var queue = [];
  var timer = null;
  var user = null;
  var anon;
  function id() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }
  try {
    anon = w.localStorage.getItem("eddyline_anonymous_id") || id();
    w.localStorage.setItem("eddyline_anonymous_id", anon);
  } catch (e) {
    anon = id();
  }
  function body(batch) {
    return JSON.stringify({ batch: batch, sentAt: new Date().toISOString(), writeKey: key });
  }
  function flush(leaving) {
    clearTimeout(timer);
    timer = null;
    if (!queue.length) return;
    var batch = queue.splice(0, 100);
    var url = host + "/v1/batch";
    if (leaving && w.navigator.sendBeacon) {
      // text/plain: a simple request, no preflight; the collector reads it as JSON
      if (w.navigator.sendBeacon(url, new Blob([body(batch)], { type: "text/plain" }))) return;
    }
    w.fetch(url, { method: "POST", body: body(batch), keepalive: true, headers: { "Content-Type": "text/plain" } })
      .then(function (r) {
        if (r.status >= 500 || r.status === 429) throw new Error(String(r.status));
      })
      .catch(function () {
        queue = batch.concat(queue); // the same messageIds: a retry is not a new event
        timer = setTimeout(flush, 2000);
      });
    if (queue.length) flush(leaving);
  }
  function push(type, fields) {
    var message = { type: type, messageId: id(), timestamp: new Date().toISOString(), anonymousId: anon };
    if (user) message.userId = user;
    for (var k in fields) message[k] = fields[k];
    queue.push(message);
    if (queue.length >= 20) flush(false);
    else if (!timer) timer = setTimeout(flush, 1000);
  }
  w.eddyline = {
    track: function (event, properties) { push("track", { event: event, properties: properties || {} }); },
    page: function (category, properties) {
      var p = { path: w.location.pathname, url: w.location.href, title: d.title };
      for (var k in properties || {}) p[k] = properties[k];
      push("page", { category: category, properties: p });
    },
    identify: function (userId) { user = String(userId); }, // traits are not sent: they would be dropped
    flush: function () { flush(false); },
  };
  d.addEventListener("visibilitychange", function () {
    if (d.visibilityState === "hidden") flush(true);
  });
  w.addEventListener("pagehide", function () { flush(true); });
})(window, document);
