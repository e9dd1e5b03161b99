"""`alliance-fhir checkin link`: a URL without PHI; the secret only from env or file."""

from __future__ import annotations

import pytest
from clikit import Run

SECRET = "unit-test check-in secret of 32+ characters"


def test_link_prints_an_opaque_url_and_its_expiry(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_CHECKIN_SECRET", SECRET)
    monkeypatch.setenv("ALLIANCE_FHIR_CHECKIN_BASE_URL", "https://checkin.example.org")
    result = run("checkin", "link", "--patient", "http://example-clinic.org/mrn|MRN-7001",
                 "--instrument", "srs", "--encounter", "77", "--expires", "30m")  # fmt: skip
    assert result.code == 0, result.err
    url, expires = result.out.splitlines()
    assert url.startswith("https://checkin.example.org/checkin/gAAAAA")
    assert "MRN-7001" not in result.out + result.err
    assert expires.startswith("expires: ")
    assert SECRET not in result.out + result.err


def test_link_without_a_secret_is_a_config_error(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLIANCE_FHIR_CHECKIN_SECRET", raising=False)
    result = run("checkin", "link", "--patient", "urn:x|1", "--instrument", "srs")
    assert result.code == 2
    assert "ALLIANCE_FHIR_CHECKIN_SECRET" in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--instrument", "nope"], "nope"),
        (["--instrument", "srs", "--expires", "30d"], "expires"),
        (["--instrument", "trc-clinician"], "practitioner"),
    ],
)
def test_link_refuses_what_it_cannot_make(
    run: Run, monkeypatch: pytest.MonkeyPatch, args: list[str], words: str
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_CHECKIN_SECRET", SECRET)
    result = run("checkin", "link", "--patient", "urn:x|1", *args)
    assert result.code != 0
    assert words in result.err
    assert result.out == ""
