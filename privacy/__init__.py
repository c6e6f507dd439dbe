"""Differential privacy at the boundary: mechanisms, pseudonyms, policies from annotations.

Uses ``schemas``; imports no Kafka client.
"""

from privacy.estimators import (
    Estimate,
    laplace_mean,
    laplace_sum,
    oue_frequencies,
    rr_frequencies,
)
from privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    RandomizedResponseMechanism,
    UnaryEncodingMechanism,
)
from privacy.policy import PrivacyPolicy
from privacy.pseudonymize import HmacPseudonymizer, PseudonymKey, load_keyring, load_or_create_key
from privacy.scrub import scrub

__all__ = [
    "Estimate",
    "GaussianMechanism",
    "HmacPseudonymizer",
    "LaplaceMechanism",
    "Mechanism",
    "PrivacyPolicy",
    "PseudonymKey",
    "RandomizedResponseMechanism",
    "UnaryEncodingMechanism",
    "laplace_mean",
    "laplace_sum",
    "load_keyring",
    "load_or_create_key",
    "oue_frequencies",
    "rr_frequencies",
    "scrub",
]
