"""FHIR R4 discharge bundles mapped to mtm contracts."""

from mtm.fhir.bundle import parse_bundle
from mtm.fhir.errors import BundleError
from mtm.fhir.validation import is_fhir_bundle

__all__ = ["BundleError", "is_fhir_bundle", "parse_bundle"]
