"""Online River models over privatised events, and the drift detectors that watch them.

Uses ``schemas``; imports no Kafka client.
"""

from online_learning.checkpoint import Checkpoint, ModelStore
from online_learning.detectors import AdwinDetector, Alarm
from online_learning.learner import BatchOutcome, OnlineModel
from online_learning.spec import LearnerSpec, LearnerSpecError, load_spec, load_specs

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
