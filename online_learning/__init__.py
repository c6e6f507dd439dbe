"""Online River models over privatised events, and the drift detectors that watch them.

Uses ``schemas``; imports no Kafka client.
"""

from eddyline.online_learning.checkpoint import Checkpoint, ModelStore
from eddyline.online_learning.detectors import AdwinDetector, Alarm
from eddyline.online_learning.learner import BatchOutcome, OnlineModel
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_spec, load_specs

__all__ = [
    "AdwinDetector",
    "Alarm",
    "BatchOutcome",
    "Checkpoint",
    "LearnerSpec",
    "LearnerSpecError",
    "ModelStore",
    "OnlineModel",
    "load_spec",
    "load_specs",
]
