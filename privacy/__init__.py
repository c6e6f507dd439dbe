"""Differential privacy at the boundary: mechanisms, pseudonyms, policies from annotations.

Uses ``schemas``; imports no Kafka client.
"""

from privacy.mechanisms import LaplaceMechanism, Mechanism, RandomizedResponseMechanism
from privacy.policy import PrivacyPolicy
from privacy.pseudonymize import HmacPseudonymizer, load_or_create_key

__all__ = [
    "HmacPseudonymizer",
    "LaplaceMechanism",
    "Mechanism",
    "PrivacyPolicy",
    "RandomizedResponseMechanism",
    "load_or_create_key",
]
