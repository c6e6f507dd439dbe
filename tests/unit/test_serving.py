"""Registry versions answer predictions beside the online model (online_learning/serving.py),
from a real registry folder with real scorers."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.registry import CHAMPION, ModelRegistry
from eddyline.online_learning.scoring import SpecScorer
from eddyline.online_learning.serving import RegistryServing, VersionNotServedError, parse_version
from eddyline.online_learning.spec import LearnerSpecError, load_spec

QUERY = {"item_category": "news", "position": "3", "dwell_time_s": "12.5"}


def _register(registry: ModelRegistry, bias: float) -> int:
    spec = load_spec("click")
    rows = pa.Table.from_pylist(
        [
            {"item_category": c, "position": p, "dwell_time_s": d, "action": a}
            for c, p, d, a in [("news", 1, 3.0, "view"), ("sports", 4, 20.0, "click")]
        ]
    )
    scorer = SpecScorer.fit(spec, rows)
    scorer.bias = [bias]

    def write(folder: Path) -> None:
        scorer.save(folder)

    version = registry.register(
        "click", write, metrics={}, epsilon=1.0, delta=1e-6, accountant_history=[],
        data_key="k", lineage={},
    )  # fmt: skip
    return version.version


def test_the_champion_answers_with_its_own_weights_and_a_promotion_is_served_within_the_ttl(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    online = OnlineModel.builtin("click")
    clock = [0.0]
    serving = RegistryServing(registry, alias_ttl_s=5.0, clock=lambda: clock[0])
    with pytest.raises(VersionNotServedError, match="no champion yet"):
        serving.answer(online, CHAMPION, QUERY)

    v1, v2 = _register(registry, bias=2.0), _register(registry, bias=-2.0)
    registry.set_alias("click", CHAMPION, v1, "first")
    clock[0] = 10.0
    first = serving.answer(online, CHAMPION, QUERY)
    # zero weights: the answer is the sigmoid of the bias alone
    assert first["model_version"] == v1 and first["served"] == CHAMPION
    assert first["probability"] == pytest.approx(1 / (1 + math.exp(-2.0)))

    registry.set_alias("click", CHAMPION, v2, "promoted")
    clock[0] = 12.0  # within the TTL: still the old champion
    assert serving.answer(online, CHAMPION, QUERY)["model_version"] == v1
    clock[0] = 15.5
    second = serving.answer(online, CHAMPION, QUERY)
    assert second["model_version"] == v2
    assert second["probability"] == pytest.approx(1 / (1 + math.exp(2.0)))
    assert serving.answer(online, v1, QUERY)["probability"] == first["probability"]

    with pytest.raises(VersionNotServedError, match="no version 7"):
        serving.answer(online, 7, QUERY)
    with pytest.raises(LearnerSpecError, match="missing feature 'position'"):
        serving.answer(online, CHAMPION, {"item_category": "news", "dwell_time_s": "1"})


def test_version_names_are_checked() -> None:
    assert parse_version("online") == "online" and parse_version("12") == 12
    for bad in ("0", "-1", "latest", "1.5"):
        with pytest.raises(ValueError, match="version must be online"):
            parse_version(bad)
