"""`alliance-fhir serve`: one ASGI app for the people who use the tool directly.

The client's check-in page, the clinician's SMART view and the CDS Hooks service live here. Like
the CLI and the daemon this is an entry point: it reaches the rest of the tool only through
`alliance_fhir.api`, so the web app can never do anything a sync run would not.
"""
