"""Sync: plan what to write from the state store, apply it to a FHIR server, remember it.

``plan`` decides per record (pure), ``engine`` sends the writes and records the answers,
``state`` is the state store (SQLite or PostgreSQL), ``references`` resolves logical
references, ``export`` writes bundles to files instead of a server. Import from those
modules; this package re-exports nothing.
"""
