"""The one error raised for input that is not a usable FHIR R4 bundle."""

from __future__ import annotations


class BundleError(ValueError):
    """Names the offending resource (`Type/id` or `Bundle`), the field path inside it, and why."""

    def __init__(self, resource: str, field: str, reason: str) -> None:
        super().__init__(f"{resource}: {field}: {reason}")
        self.resource = resource
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[BundleError], tuple[str, str, str]]:
        return (type(self), (self.resource, self.field, self.reason))
