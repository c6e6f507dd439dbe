"""Asking a worker for predictions from Python: ``Predictor`` over ``GET /predict/<model>``.

Examples:
    >>> p = Predictor("http://127.0.0.1:6066")  # no network call until predict()
    >>> p.url_for("click", {"item_category": "news", "position": 3})
    'http://127.0.0.1:6066/predict/click?item_category=news&position=3'
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from eddyline.schemas.errors import EddylineError


@dataclass(frozen=True)
class Prediction:
    """A worker's answer and which model state gave it: ``probability`` (a binary spec),
    ``value`` (a regression) or ``label`` and ``probabilities`` (a multi-class spec); the
    others are None. ``served``: ``online`` (the model learning live; ``events_seen`` is how
    many it has learned), or the registry alias or version asked for (``events_seen`` None)."""

    model: str
    model_version: int
    events_seen: int | None
    probability: float | None = None
    value: float | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    served: str = "online"


class PredictionError(EddylineError):
    """The worker refused the request (unknown model, bad features) or did not answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Predictor:
    """Predictions from a worker's web server (``EDDYLINE_WEB_PORT``, default 6066).

    Features are the privatised columns the model learns from (for the click model:
    ``item_category``, ``position``, ``dwell_time_s``)."""

    def __init__(self, url: str = "http://127.0.0.1:6066", timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def url_for(self, model: str, features: dict[str, Any]) -> str:
        query = urllib.parse.urlencode(features)
        return f"{self.url}/predict/{urllib.parse.quote(model)}?{query}"

    def predict(
        self, model: str, *, version: str | int | None = None, **features: Any
    ) -> Prediction:
        """One prediction; raises :class:`PredictionError` with the worker's reason.
        ``version``: None or ``"online"`` (the live model), ``"champion"``, ``"challenger"``,
        ``"previous"`` or a registry version number."""
        query = features if version is None else {**features, "version": version}
        url = self.url_for(model, query)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - http(s) URL we built
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                reason = exc.reason
            raise PredictionError(f"{model}: {reason} (HTTP {exc.code})", exc.code) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise PredictionError(f"no answer from the worker at {self.url}: {exc}") from None
        number = {k: float(body[k]) for k in ("probability", "value") if body.get(k) is not None}
        return Prediction(
            body["model"],
            int(body["model_version"]),
            None if body.get("events_seen") is None else int(body["events_seen"]),
            label=body.get("class"),
            probabilities=body.get("probabilities"),
            served=str(body.get("served", "online")),
            **number,
        )
