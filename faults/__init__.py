"""Fault injection between alliance-fhir and a real HAPI FHIR server.

``python -m faults.run`` (``make faults``) starts its own file-backed HAPI server, a real TCP
proxy (toxiproxy, see ``scripts/install-toxiproxy``) and a small HTTP status shim of ours, runs
every scenario of :mod:`faults.scenarios` and checks after each one that the server holds
exactly the expected records (:mod:`faults.invariants`). ``tests/integration/
test_faults_subset.py`` runs a short subset of the same scenarios in ``make test``;
``tests/integration/matrix_ehr_faults.py`` (``make ehr-matrix``) runs ``PROFILE_SCENARIOS``
(a 503 burst on writes, the client SIGKILLed, the state file deleted) through each EHR-like
profile of the test server (``Harness.profile``, issue #13).

Which fault comes from where:

* toxiproxy (network level, between client and server): added latency, connections reset
  mid-response (``limit_data``, ``reset_peer``), stalled connections that time out;
* :mod:`faults.shim` (HTTP level; toxiproxy cannot make HTTP statuses): bursts of 503 and of
  429 with ``Retry-After`` answered by a real local HTTP server in front of HAPI;
* process level: the HAPI server SIGKILLed and restarted on its H2 file database, and the
  ``alliance-fhir push`` CLI SIGKILLed mid-run and started again;
* the daemon inbox (:mod:`faults.inbox`, a real ``alliance-fhir daemon`` process): a hostile
  YAML file beside good ones, a name collision in ``processed/``, a writer pausing mid-file,
  hard and symbolic links to files outside the inbox, and a server whose 422 echoes the
  request (the shim's ``echo_when``), each with the PHI scan of reports, output and dead
  letters.
"""
