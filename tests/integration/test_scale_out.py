"""Many workers, as on many machines: their own state folders, sharing only Kafka and the
object store (the lake and the model checkpoints on Azurite). While 300,000 events stream
in, one worker is killed -9 and another stopped and restarted (three machines), or one is
killed -9 and comes back (two machines). Afterwards: every valid event
is in Delta exactly once; the click model, learned by one worker at a time (the owner of its
learn partition), has learned each event exactly once over its life; one drift event for the
injected change, whose Delta version range the retraining job trains from; and every
surviving worker answers /predict/click from the same model state."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from eddyline.consumers.lake import Lake
from eddyline.consumers.retrain import RetrainJob, TrainConfig
from eddyline.online_learning.registry import ModelRegistry
from eddyline.schemas.storage import join
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.worker.process import WorkerProcess
from tests.azurite import Azurite
from tests.integration.helpers import deadlettered_rows, drift_events, wait_for
from tests.integration.test_exactly_once import Stream

pytestmark = pytest.mark.integration
TOTAL, DRIFT_AT = 300_000, 150_000
QUERY = "/predict/click?item_category=news&position=2&dwell_time_s=8"


def _answer(worker: WorkerProcess) -> dict:
    return json.loads(worker.get(QUERY) or "{}")


@pytest.mark.parametrize("machines", [3, 2])
def test_machines_share_one_logical_model_and_one_lake_on_the_object_store(
    machines: int,
    kafka: KafkaSettings,
    worker_env: dict[str, str],
    object_store: str,
    azurite: Azurite,
    tmp_path: Path,
) -> None:
    lake_uri = join(object_store, "lake")
    base = {
        **worker_env,
        **azurite.env(),
        "EDDYLINE_LAKE_PATH": lake_uri,
        "EDDYLINE_CHECKPOINT_PATH": join(object_store, "checkpoints"),
        "EDDYLINE_SESSION_TIMEOUT_S": "6",
        "EDDYLINE_BUDGET_EPSILON": "1e6",  # replays are charged again: this is about delivery
        "EDDYLINE_MODEL_REFRESH_S": "1",
    }

    def start(n: int, run: int = 0) -> WorkerProcess:
        env = {**base, "EDDYLINE_STATE_DIR": str(tmp_path / f"machine-{n}")}
        return WorkerProcess(env, tmp_path / f"worker-{n}-{run}.log", free_port()).start(90)

    workers = [start(n) for n in range(machines)]
    stream = Stream(kafka, TOTAL, rate=10_000, seed=41, drift_at=DRIFT_AT)
    stream.start()
    time.sleep(6)
    workers[0].kill()  # machine 0 dies
    time.sleep(5)
    if machines == 3:
        assert workers[1].stop() == 0  # machine 1 is stopped for maintenance ...
        time.sleep(4)
        workers[1] = start(1, run=1)  # ... and comes back
        alive = workers[1:]
    else:
        workers[0] = start(0, run=1)  # machine 0 comes back after its crash
        alive = workers
    stream.join()
    assert stream.error is None, stream.error
    lake = Lake(lake_uri)

    def ids() -> list[str]:
        if "interaction" not in lake.tables():
            return []
        return lake.read("interaction", columns=["event_id"])["event_id"].to_pylist()

    try:
        wait_for(lambda: len(ids()) >= TOTAL, 300, "every event in Delta", every=3)
        # one logical model: it learned each event once over its life, and every surviving
        # worker (the owner, and the follower from its checkpoints) answers from that state
        wait_for(
            lambda: all(_answer(w).get("events_seen", 0) >= TOTAL for w in alive),
            180,
            "both workers answering from the whole stream",
            status=lambda: str([_answer(w).get("events_seen") for w in alive]),
        )
        answers = [_answer(w) for w in alive]
        assert [a["events_seen"] for a in answers] == [TOTAL] * len(alive), answers
        assert len({a["model_version"] for a in answers}) == 1, answers
        assert len({round(a["probability"], 12) for a in answers}) == 1, answers
        time.sleep(3)  # a late duplicate would land now
        written = Counter(ids())
        assert set(written) == set(stream.sent)
        assert max(written.values()) == 1, f"{sum(written.values()) - len(written)} duplicates"
        wait_for(
            lambda: len(deadlettered_rows(kafka)) == len(stream.invalid),
            60,
            "every invalid event dead-lettered",
        )
        # One drift event for the change: a replay after a crash repeats its key, not a new
        # one, and each partition's crossing of it is merged. The detector's own false alarms
        # are another matter (bench/drift.py: 0.034 per 10,000 events on no-change streams,
        # so ~1 in these 300,000): one at ~185,000 events in every run of the 2-machine case
        # on a loaded box (8 of 8; 2 of 5 with 3 machines), on batches at the stream's usual
        # error (0.27 against 0.21-0.25) where the partitions' interleaving put a run of
        # errors (session 17's per-batch trace, in its closing note). Those lie more than
        # 30,000 events from the change; more than 3 of them would be a bug (Poisson, mean 1:
        # P(> 3) = 1.9%, the false-failure rate of this line).
        drifts = [d for d in drift_events(kafka) if d.model == "click" and d.signal == "error_rate"]
        seen = [(d.events_seen, d.idempotency_key) for d in drifts]
        near = [d for d in drifts if abs(d.events_seen - DRIFT_AT) < 30_000]
        assert len({d.idempotency_key for d in near}) == 1, seen
        assert len({d.idempotency_key for d in drifts} - {near[0].idempotency_key}) <= 3, seen
        drift = near[0]
        # The injected change (error 0.23 -> ~0.7), not a false alarm. Its count may be under
        # DRIFT_AT: the partitions are learned out of step, so one partition's post-change
        # rows can reach the model before 150,000 rows in all have.
        assert drift.stat_after - drift.stat_before > 0.3, drift
        assert drift.events_seen > DRIFT_AT - 30_000 and drift.lake_version_before is not None
        registry = ModelRegistry(join(object_store, "_registry"))
        job = RetrainJob(lake_uri, registry, config=TrainConfig(epsilon=3.0, epochs=2))
        version = job.handle(drift)
        assert version is not None
        assert version.lineage["trained_on"]["after_version"] == drift.lake_version_before
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(w.dump() for w in alive)) from exc
    finally:
        for w in alive:
            w.stop()
