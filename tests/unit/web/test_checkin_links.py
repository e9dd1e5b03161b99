"""Check-in links: opaque, tamper-evident, expiring, used once even across a restart."""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alliance_fhir.api.checkin_links import (
    LinkRefused,
    UsedLinks,
    create_checkin_link,
    parse_lifetime,
    read_token,
)
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConfigError, InvalidInputError
from alliance_fhir.sync.state import StateStore

SECRET = "unit-test check-in secret of 32+ characters"
PATIENT = "http://example-clinic.org/mrn|MRN-7001"


def _settings(tmp_path: Path, **kw: object) -> Settings:
    values: dict[str, object] = {
        "state_path": tmp_path / "state.sqlite3",
        "checkin_secret": SECRET,
        "checkin_base_url": "https://checkin.example.org/",
    }
    values.update(kw)
    return Settings(**values)  # type: ignore[arg-type]  # a test's mix of settings


def test_a_link_names_no_patient_and_reads_back(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    link = create_checkin_link(settings, patient=PATIENT, instrument="srs", encounter="Encounter/9")
    assert link.url == f"https://checkin.example.org/checkin/{link.token}"
    padded = link.token + "=" * (-len(link.token) % 4)
    raw = base64.urlsafe_b64decode(padded)
    for secret_part in (b"MRN-7001", b"example-clinic", b"srs"):
        assert secret_part not in raw  # encrypted, not merely signed
    claims = read_token(settings, link.token)
    assert (claims.patient, claims.instrument, claims.encounter) == (PATIENT, "srs", "9")
    assert claims.assessment_key.startswith("checkin-")
    other = create_checkin_link(settings, patient=PATIENT, instrument="srs")
    assert read_token(settings, other.token).assessment_key != claims.assessment_key


def test_a_changed_token_or_another_key_is_refused_with_400(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    token = create_checkin_link(settings, patient=PATIENT, instrument="srs").token
    i = len(token) // 2
    changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    for bad in (changed, token[:-4], "not-a-token", ""):
        with pytest.raises(LinkRefused) as refused:
            read_token(settings, bad)
        assert refused.value.status == 400
    other_key = _settings(tmp_path, checkin_secret="another secret, also 32+ characters")
    with pytest.raises(LinkRefused) as refused:
        read_token(other_key, token)
    assert refused.value.status == 400


def test_an_expired_link_is_refused_with_410(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    made = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    link = create_checkin_link(
        settings, patient=PATIENT, instrument="srs", lifetime=timedelta(hours=2), now=made
    )
    assert read_token(settings, link.token, now=made + timedelta(minutes=119)).instrument == "srs"
    with pytest.raises(LinkRefused) as refused:
        read_token(settings, link.token, now=made + timedelta(hours=2))
    assert refused.value.status == 410
    assert "expired" in refused.value.message


def test_a_used_link_stays_used_after_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    claims = read_token(
        settings, create_checkin_link(settings, patient=PATIENT, instrument="srs").token
    )
    with StateStore(settings.state_path) as store:
        used = UsedLinks(store)
        assert not used.is_used(claims)
        used.claim(claims)
        with pytest.raises(LinkRefused) as refused:
            used.claim(claims)
        assert refused.value.status == 409
    with StateStore(settings.state_path) as store:  # a new process, the same file
        assert UsedLinks(store).is_used(claims)
    with closing(sqlite3.connect(settings.state_path)) as db:
        rows = db.execute("SELECT * FROM checkin_used").fetchall()
    assert rows == [(claims.id_hash, rows[0][1])]
    assert "MRN-7001" not in str(rows)


def test_a_released_claim_can_be_used_again(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    claims = read_token(
        settings, create_checkin_link(settings, patient=PATIENT, instrument="srs").token
    )
    with StateStore(settings.state_path) as store:
        used = UsedLinks(store)
        used.claim(claims)
        used.release(claims)
        assert not used.is_used(claims)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)),
     ("7d", timedelta(days=7)), (" 1H ", timedelta(hours=1))],
)  # fmt: skip
def test_lifetimes(text: str, expected: timedelta) -> None:
    assert parse_lifetime(text) == expected


@pytest.mark.parametrize("text", ["0h", "8d", "2", "h", "-1h", "1w", "1.5h"])
def test_lifetimes_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_lifetime(text)


def test_no_secret_or_a_short_one_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALLIANCE_FHIR_CHECKIN_SECRET", raising=False)
    with pytest.raises(ConfigError, match="ALLIANCE_FHIR_CHECKIN_SECRET"):
        create_checkin_link(
            _settings(tmp_path, checkin_secret=None), patient=PATIENT, instrument="srs"
        )
    with pytest.raises(ConfigError, match="at least 32"):
        create_checkin_link(
            _settings(tmp_path, checkin_secret="short"), patient=PATIENT, instrument="srs"
        )


def test_the_secret_file_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "checkin.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    from_file = _settings(tmp_path, checkin_secret=None, checkin_secret_file=secret)
    token = create_checkin_link(from_file, patient=PATIENT, instrument="srs").token
    assert read_token(_settings(tmp_path), token).patient == PATIENT


def test_a_bare_mrn_needs_the_configured_system(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        create_checkin_link(_settings(tmp_path), patient="MRN-7001", instrument="srs")
    settings = _settings(tmp_path, patient_identifier_system="http://example-clinic.org/mrn")
    token = create_checkin_link(settings, patient="MRN-7001", instrument="srs").token
    assert read_token(settings, token).patient == PATIENT


def test_the_secret_is_refused_in_the_config_file(tmp_path: Path) -> None:
    from alliance_fhir.config import load_settings

    config = tmp_path / "alliance-fhir.toml"
    config.write_text(f'checkin_secret = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="ALLIANCE_FHIR_CHECKIN_SECRET or checkin_secret_file"):
        load_settings(config)
