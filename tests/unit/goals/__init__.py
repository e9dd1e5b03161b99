"""Tests of the collaborative-goal domain, its files and its FHIR mapping."""
