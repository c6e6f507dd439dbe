"""Differential privacy at the boundary: mechanisms, pseudonyms, policies from annotations.

Uses ``schemas``; imports no Kafka client. Needs the [worker] extra (dp-accounting).
"""

from eddyline.schemas.errors import require_extra

require_extra("worker", "eddyline.privacy", "dp_accounting")

from eddyline.privacy.estimators import (
    Estimate,
    laplace_mean,
    laplace_sum,
    oue_frequencies,
    rr_frequencies,
)
from eddyline.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    RandomizedResponseMechanism,
    UnaryEncodingMechanism,
)
from eddyline.privacy.policy import PrivacyPolicy
from eddyline.privacy.pseudonymize import (
    HmacPseudonymizer,
    PseudonymKey,
    load_keyring,
    load_or_create_key,
)
from eddyline.privacy.scrub import scrub

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
