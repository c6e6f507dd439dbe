"""Online River models over privatised events, and the drift detectors that watch them.

Uses ``schemas``; imports no Kafka client. Needs the [worker] extra (River, polars, Delta).
"""

from eddyline.schemas.errors import require_extra

require_extra("worker", "eddyline.online_learning", "river", "polars", "deltalake")

from eddyline.online_learning.checkpoint import Checkpoint, ModelStore
from eddyline.online_learning.cusum import CusumDetector
from eddyline.online_learning.detectors import AdwinDetector, Alarm
from eddyline.online_learning.learner import BatchOutcome, OnlineModel
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_spec, load_specs

__all__ = [
    "AdwinDetector",
    "Alarm",
    "BatchOutcome",
    "Checkpoint",
    "CusumDetector",
    "LearnerSpec",
    "LearnerSpecError",
    "ModelStore",
    "OnlineModel",
    "load_spec",
    "load_specs",
]
