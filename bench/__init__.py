"""Benchmarks of alliance-fhir against its peers on a local HAPI FHIR server.

``python -m bench.generate`` writes a synthetic clinic; ``python -m bench.run`` runs every
scenario (each in its own client process) and writes the table to BENCHMARKS.md. See
BENCHMARKS.md for what is measured and how to reproduce it.
"""
