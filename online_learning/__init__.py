"""Online River models over privatised events, and the drift detectors that watch them.

Uses ``schemas``; imports no Kafka client.
"""

from online_learning.checkpoint import Checkpoint, ModelStore
from online_learning.detectors import AdwinDetector, Alarm
from online_learning.learner import BatchOutcome, ClickModel

__all__ = ["AdwinDetector", "Alarm", "BatchOutcome", "Checkpoint", "ClickModel", "ModelStore"]
