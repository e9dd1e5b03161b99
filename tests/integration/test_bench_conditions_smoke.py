"""The four-conditions benchmark at a tiny size, so it cannot rot (the real run is
``make bench-conditions``): the test server's ``no-validation`` profile and a toxiproxy with
25 ms of added round trip are really used, and the table has a met / missed row for each
condition. Nothing here is timed; peers are left out to keep it short."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` lives beside `src`, outside the package
    sys.path.insert(0, str(REPO))

from bench import conditions  # noqa: E402


def test_the_no_validation_profile_stores_what_validation_refuses(fhir_base_url: str) -> None:
    origin = conditions.origin_of(fhir_base_url)
    # status is required on an Observation: the validating server refuses it, the other not
    bad = {"resourceType": "Observation", "code": {"text": "no status"}}
    headers = {"Content-Type": "application/fhir+json"}
    with httpx.Client(timeout=60) as http:
        refused = http.post(f"{fhir_base_url}/Observation", json=bad, headers=headers)
        stored = http.post(
            f"{origin}{conditions.NO_VALIDATION_PATH}/Observation", json=bad, headers=headers
        )
    assert refused.status_code == 422
    assert stored.status_code == 201


def test_tiny_four_conditions_run(fhir_base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# B\n\n<!-- bench:results:start -->\nR\n<!-- bench:results:end -->\n")
    raw = tmp_path / "conditions.json"
    conditions.main(
        [
            "--base-url",
            fhir_base_url,
            "--size",
            "20",
            "--repeat",
            "1",
            "--no-peers",
            "--out",
            str(out),
            "--json",
            str(raw),
            "--work",
            str(tmp_path / "work"),
            "--force",  # the load of a test run is not the point here
        ]
    )
    text = out.read_text(encoding="utf-8")
    assert text.index("<!-- bench:results:end -->") < text.index(conditions.START)
    rows = [line for line in text.splitlines() if " ms RTT |" in line]
    assert len(rows) == 4
    for row in rows:
        assert re.search(r"\| (met|\*\*missed\*\*) \(\d+\.\d{3}x\) \|$", row), row
    results = json.loads(raw.read_text(encoding="utf-8"))
    assert [(c["validation"], c["rtt_ms"]) for c in results["conditions"]] == [
        (True, 0),
        (True, 25),
        (False, 0),
        (False, 25),
    ]
    for cond in results["conditions"]:
        rows = {m["scenario"]: m for m in cond["rows"]}
        assert rows["sync"]["extra"]["failures"] == []
        assert rows["sync"]["resources"] == rows["ceiling"]["resources"] > 40
        assert cond["x_ceiling"] > 0
    # the added latency is real: a 25 ms condition's ceiling needs >= 25 ms per request
    slow = {m["scenario"]: m for m in results["conditions"][1]["rows"]}["ceiling"]
    assert slow["wall_s"] >= 0.025 * slow["requests"] / 2  # two requests in flight
