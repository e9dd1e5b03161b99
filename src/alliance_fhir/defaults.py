"""Defaults every layer may need, kept in a leaf so that configuration and the domain do not
import the FHIR adapters for two strings."""

from __future__ import annotations

__all__ = ["DEFAULT_CANONICAL_BASE", "DEFAULT_NAMESPACE"]

#: Default identifier namespace; configurable (``identifier_namespace``).
DEFAULT_NAMESPACE = "http://alliance-fhir.org/fhir/identifier"

#: Default base of our canonical URLs (Questionnaire, CodeSystem); configurable.
DEFAULT_CANONICAL_BASE = "http://alliance-fhir.org/fhir"
