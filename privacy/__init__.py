"""Differential privacy at the boundary: mechanisms, pseudonyms, policies from annotations.

Uses ``schemas``; imports no Kafka client.
"""

from privacy.estimators import Estimate, laplace_mean, laplace_sum, rr_frequencies
from privacy.mechanisms import LaplaceMechanism, Mechanism, RandomizedResponseMechanism
from privacy.policy import PrivacyPolicy
from privacy.pseudonymize import HmacPseudonymizer, load_or_create_key

__all__ = [
    "Estimate",
    "HmacPseudonymizer",
    "LaplaceMechanism",
    "Mechanism",
    "PrivacyPolicy",
    "RandomizedResponseMechanism",
    "laplace_mean",
    "laplace_sum",
    "load_or_create_key",
    "rr_frequencies",
]
