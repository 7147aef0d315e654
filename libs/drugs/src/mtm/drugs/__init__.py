"""One drug vocabulary: medication text or RxNorm code to ingredients, strengths and formulation."""

from mtm.drugs.resolve import Component, Resolution, dose_amount_per_administration, load_vocabulary, resolve
from mtm.drugs.units import frequency_per_day, normalize_route, to_canonical_amount

__all__ = [
    "Component",
    "Resolution",
    "dose_amount_per_administration",
    "frequency_per_day",
    "load_vocabulary",
    "normalize_route",
    "resolve",
    "to_canonical_amount",
]
