"""The application layer: use cases built from the layers below (records to sync, the
monitor run, alert writing, reports, goal pulls), orchestrated by ``alliance_fhir.api``.

Only this layer (and those above it) may combine ``sync`` with ``monitoring``.
"""
