"""The benchmark harness at a tiny size, so it cannot rot (the real run is `make bench`).

Runs every scenario of ``bench.run`` against the test server and checks that the report has
every row with sane numbers. Nothing here is timed: speed is BENCHMARKS.md's business.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` lives beside `src`, outside the package
    sys.path.insert(0, str(REPO))

from bench import run  # noqa: E402

SERVER_ROWS = (
    "ceiling (1st)",
    "alliance-fhir sync",
    "re-sync, nothing changed",
    "re-sync, 5% changed",
    "ceiling (2nd)",
    "fhirpy",
    "fhirclient",
)


def test_tiny_benchmark_run_reports_every_scenario(fhir_base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    raw = tmp_path / "results.json"
    out.write_text(
        "# Benchmarks\n\nkept text\n\n<!-- bench:results:start -->\nold\n"
        "<!-- bench:results:end -->\n\nanalysis kept\n",
        encoding="utf-8",
    )
    run.main(
        [
            "--base-url",
            fhir_base_url,
            "--size",
            "40",  # 2 clients x 10 sessions x 2 instruments; 5% changed touches 2 of them
            "--changed",
            "0.05",
            "--mapping-size",
            "40",
            "--memory-size",
            "40",
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
    assert "kept text" in text
    assert "analysis kept" in text
    assert "\nold\n" not in text
    for row in SERVER_ROWS:
        assert f"| {row} |" in text
    assert "### Mapping alone" in text
    assert "### Memory: importing 40 assessments" in text
    assert "### Targets" in text

    results = json.loads(raw.read_text(encoding="utf-8"))
    rows = {m["scenario"]: m for m in results["server"]["40"]}
    assert set(rows) == set(SERVER_ROWS)
    sync = rows["alliance-fhir sync"]
    total = sync["extra"]["records"]
    assert total > 80  # 40 QuestionnaireResponses + 40 Observations + goals + instruments
    assert sync["resources"] == total
    assert sync["extra"]["failures"] == []
    for name in ("ceiling (1st)", "ceiling (2nd)", "fhirpy", "fhirclient"):
        assert rows[name]["resources"] == total, name
    for m in rows.values():
        assert m["wall_s"] > 0
        assert m["cpu_s"] >= 0
        assert 10 < m["peak_rss_mb"] < 4000
        assert m["requests"] >= 1
    # one request per bundle for the ceiling; one per resource (and more) for the peers
    assert rows["ceiling (1st)"]["requests"] <= 2
    assert rows["fhirpy"]["requests"] >= total
    assert rows["fhirclient"]["requests"] >= total
    same = rows["re-sync, nothing changed"]
    assert same["writes"] == 0
    assert same["requests"] <= 1
    assert same["extra"]["counts"] == {"unchanged": total}
    changed = rows["re-sync, 5% changed"]
    # two assessments changed: each updates its response and its score
    assert changed["extra"]["counts"].get("updated") == 2 * 2
    assert changed["writes"] >= 1

    mapping = {m["scenario"]: m for m in results["mapping"]}
    assert mapping["mapping"]["resources"] == mapping["baseline"]["resources"] == 80
    memory = {m["scenario"]: m for m in results["memory"]}
    assert memory["read"]["resources"] == 40
    assert memory["import"]["resources"] == 80
