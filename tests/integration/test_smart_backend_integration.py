"""SMART Backend Services against a real OpenID provider and HAPI checking its tokens (#18).

One provider (``oidc_provider``) and the bearer-checked mount (``smart_fhir_base_url``) serve
every test here. The sync job's key is registered with the provider; the CLI and the API
get it the way a clinic configures them (``auth = "smart"``, the key in a 0600 file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.fhir import AuthContext, Secret, SmartBackendAuth

from .clinickit import PHI, copy_clinic
from .conftest import LOG_CAPTURE
from .oidckit import OidcProvider, TestKey

SYNC_SCOPES = "system/*.rs system/*.cud"
#: A loaded CI machine validates a first transaction slowly; the auth is what is tested here.
TIMEOUT_S = 300
PAST_HALF_LIFE_S = 1.7  # the short-job client's 3 s tokens are renewed from 1.5 s
KEYS = {
    "RS384": TestKey.generate("sync-rs384", "RS384"),
    "ES384": TestKey.generate("sync-es384", "ES384"),
}
REVOKED = TestKey.generate("sync-revoked", "RS384")
NARROW = TestKey.generate("narrow", "ES384")
ADMIN = TestKey.generate("admin", "ES384")
#: Our resources in the example clinic, per type, after publish + push of both folders.
OUR_TYPES = ("QuestionnaireResponse", "Observation", "Goal", "CarePlan")
EXPECTED = {"QuestionnaireResponse": 81, "Observation": 93, "Goal": 16, "CarePlan": 4}


@pytest.fixture(scope="module")
def smart(oidc_provider: OidcProvider, smart_fhir_base_url: str) -> OidcProvider:
    oidc_provider.register_backend_client("sync-job", list(KEYS.values()), SYNC_SCOPES)
    oidc_provider.register_backend_client(
        "short-job", list(KEYS.values()), SYNC_SCOPES, access_token_ttl=3
    )
    oidc_provider.register_backend_client(
        "window-job", [KEYS["RS384"]], SYNC_SCOPES, access_token_ttl=20
    )
    oidc_provider.register_backend_client("revoked-job", [REVOKED], SYNC_SCOPES)
    oidc_provider.register_backend_client("narrow-job", [NARROW], "system/*.rs")
    oidc_provider.register_backend_client("admin", [ADMIN], "system/*.cruds")
    oidc_provider.apply()
    return oidc_provider


@contextmanager
def _admin(smart: OidcProvider, base: str) -> Iterator[httpx.Client]:
    """An HTTP client holding a ``system/*.cruds`` token: to reset and count, not to sync."""
    auth = SmartBackendAuth(
        client_id="admin",
        private_key=Secret(ADMIN.private_pem),
        key_id=ADMIN.kid,
        scopes="system/*.cruds",
        token_endpoint=smart.token_endpoint,
        allow_insecure_http=True,
    )
    with httpx.Client(
        base_url=base, timeout=TIMEOUT_S, headers={"Accept": "application/fhir+json"}
    ) as http:
        header = auth.authorization(AuthContext(http=http, base_url=httpx.URL(base)))
        assert header is not None
        http.headers["Authorization"] = header
        yield http


def _expunge(smart: OidcProvider, base: str) -> None:
    with _admin(smart, base) as http:
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
        }
        assert http.post("/$expunge", json=body).status_code == 200


def _identifiers(smart: OidcProvider, base: str, resource_type: str) -> list[str]:
    """Every identifier (system|value) of ``resource_type`` on the server, all pages."""
    found: list[str] = []
    with _admin(smart, base) as http:
        url: str | None = f"/{resource_type}?_count=200&_elements=identifier"
        while url:
            page = http.get(url).json()
            for entry in page.get("entry", []):
                ids = entry["resource"].get("identifier", [])
                ids = [ids] if isinstance(ids, dict) else ids  # QuestionnaireResponse: 0..1
                found += [f"{i.get('system')}|{i.get('value')}" for i in ids]
            url = next(
                (link["url"] for link in page.get("link", []) if link["relation"] == "next"), None
            )
    return found


def _key_file(tmp_path: Path, key: TestKey) -> Path:
    path = tmp_path / f"{key.kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.private_pem)
    return path


def _env(
    smart: OidcProvider, base: str, tmp_path: Path, client_id: str, key: TestKey
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
    env.update(
        ALLIANCE_FHIR_SERVER_URL=base,
        ALLIANCE_FHIR_STATE_PATH=str(tmp_path / "state" / "state.sqlite3"),
        ALLIANCE_FHIR_AUTH="smart",
        ALLIANCE_FHIR_SMART_CLIENT_ID=client_id,
        ALLIANCE_FHIR_SMART_KEY_ID=key.kid,
        ALLIANCE_FHIR_SMART_ALGORITHM=key.algorithm,
        ALLIANCE_FHIR_SMART_PRIVATE_KEY_FILE=str(_key_file(tmp_path, key)),
        ALLIANCE_FHIR_SMART_SCOPES=SYNC_SCOPES,
        ALLIANCE_FHIR_ALLOW_INSECURE_HTTP="true",
        ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS="300",
        ALLIANCE_FHIR_TIMEOUT_SECONDS=str(TIMEOUT_S),
    )
    return env


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("alliance-fhir")), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    LOG_CAPTURE.add(result.stdout + result.stderr)
    return result


def _settings(
    smart: OidcProvider, base: str, tmp_path: Path, client_id: str, key: TestKey
) -> Settings:
    return Settings(
        server_url=base,
        state_path=tmp_path / "state" / "state.sqlite3",
        auth="smart",
        smart_client_id=client_id,
        smart_key_id=key.kid,
        smart_algorithm=key.algorithm,
        smart_private_key_file=_key_file(tmp_path, key),
        smart_scopes=SYNC_SCOPES,
        allow_insecure_http=True,
        timeout_seconds=TIMEOUT_S,
        retry_deadline_seconds=300,
    )


def _sync_clinic(api: AllianceFhir, examples: Path) -> None:
    api.seed(examples / "clinic" / "people.json")
    assert api.publish(labels_only=True).ok
    assert api.push_assessments([examples / "clinic" / "assessments"]).ok
    assert api.push_goals([examples / "goals"]).ok


def _exactly_once(smart: OidcProvider, base: str) -> dict[str, int]:
    """Our records per type; fails when any identifier is on the server twice."""
    counts = {}
    for resource_type in OUR_TYPES:
        found = _identifiers(smart, base, resource_type)
        assert len(found) == len(set(found)), f"{resource_type} written twice"
        counts[resource_type] = len(found)
    return counts


def test_rs384_sync_of_the_clinic_renews_short_tokens_and_writes_each_record_once(
    smart: OidcProvider, smart_fhir_base_url: str, tmp_path: Path
) -> None:
    base = smart_fhir_base_url
    _expunge(smart, base)
    examples = copy_clinic(tmp_path)
    grants_before = smart.log_text().count("grant.success short-job")
    with AllianceFhir(_settings(smart, base, tmp_path, "short-job", KEYS["RS384"])) as api:
        # 3 s tokens, renewed at half-life whenever a request needs one. Each step starts
        # past the last token's half-life, so the run renews however fast it is (it once
        # counted on the sync itself lasting long enough).
        api.seed(examples / "clinic" / "people.json")
        time.sleep(PAST_HALF_LIFE_S)
        assert api.publish(labels_only=True).ok
        time.sleep(PAST_HALF_LIFE_S)
        assert api.push_assessments([examples / "clinic" / "assessments"]).ok
        time.sleep(PAST_HALF_LIFE_S)
        assert api.push_goals([examples / "goals"]).ok
    grants = smart.log_text().count("grant.success short-job") - grants_before
    assert grants >= 4
    counts = _exactly_once(smart, base)
    assert counts == EXPECTED, counts
    # Without a token the same server refuses: the check is really on.
    assert httpx.get(f"{base}/Goal", timeout=60).status_code == 401


def test_es384_cli_doctor_and_sync(
    smart: OidcProvider, smart_fhir_base_url: str, tmp_path: Path
) -> None:
    base = smart_fhir_base_url
    examples = copy_clinic(tmp_path)
    env = _env(smart, base, tmp_path, "sync-job", KEYS["ES384"])
    doctor = _cli(env, "doctor", cwd=tmp_path)
    assert doctor.returncode == ExitCode.OK, doctor.stderr
    assert f"scopes: asked {SYNC_SCOPES}; granted {SYNC_SCOPES}" in doctor.stdout
    # A fresh state store: every goal is written again, conditionally, and found there.
    result = _cli(env, "push", "goals", str(examples / "goals"), cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stderr
    assert _exactly_once(smart, base) == EXPECTED


def test_a_revoked_key_is_refused_with_a_clear_error(
    smart: OidcProvider, smart_fhir_base_url: str, tmp_path: Path
) -> None:
    env = _env(smart, smart_fhir_base_url, tmp_path, "revoked-job", REVOKED)
    assert _cli(env, "doctor", cwd=tmp_path).returncode == ExitCode.OK
    smart.clients["revoked-job"]["jwks"] = {"keys": []}  # the clinic's key is withdrawn
    smart.apply()
    result = _cli(env, "push", "goals", str(copy_clinic(tmp_path) / "goals"), cwd=tmp_path)
    assert result.returncode == ExitCode.SERVER_UNAVAILABLE  # our credentials were refused
    assert (
        f"error: token endpoint 127.0.0.1:{smart.port}: invalid_client "
        "client authentication failed (HTTP 401)"
    ) in result.stderr
    assert REVOKED.private_pem.splitlines()[1] not in result.stderr + result.stdout


def test_doctor_names_the_scopes_not_granted(
    smart: OidcProvider, smart_fhir_base_url: str, tmp_path: Path
) -> None:
    env = _env(smart, smart_fhir_base_url, tmp_path, "narrow-job", NARROW)
    result = _cli(env, "doctor", cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG
    assert f"scopes: asked {SYNC_SCOPES}; granted system/*.rs" in result.stdout
    assert "warning: scope not granted: system/*.cud" in result.stderr
    assert "blocker: scope system/*.cu is not granted and sync needs it" in result.stderr
    assert result.stdout.rstrip().endswith("not ready")


class OutageTransport(httpx.HTTPTransport):
    """Stops the provider when the run's first 20 s token is 1 s old and the server has
    answered a request with it (the server fetches the provider's keys on first use; the
    request after that waits for the 1 s, so a quick run still meets the outage), holds the
    run until its early refresh (due at 10 s) has failed twice, then starts the provider
    again: every early refresh in that window meets a provider that is down."""

    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider
        self.first_token_at: float | None = None
        self.stopped_at: float | None = None
        self.restarted_at: float | None = None
        self.server_answered = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.port == self.provider.port:
            response = super().handle_request(request)
            if self.first_token_at is None and response.status_code == 200:
                self.first_token_at = time.monotonic()
            return response
        self._window()
        response = super().handle_request(request)
        self.server_answered = self.first_token_at is not None
        return response

    def _age(self) -> float:
        assert self.first_token_at is not None
        return time.monotonic() - self.first_token_at

    def _window(self) -> None:
        if not self.server_answered or self.restarted_at is not None:
            return
        if self.stopped_at is None:
            time.sleep(max(0.0, 1 - self._age()))
            self.provider.stop()
            self.stopped_at = self._age()
            time.sleep(max(0.0, 11 - self._age()))  # past the early-refresh point
        elif self._age() >= 13.5:
            self.restarted_at = self._age()
            self.provider.apply()
        else:
            time.sleep(2)


def test_provider_down_during_the_early_refresh_window_the_run_completes(
    smart: OidcProvider, smart_fhir_base_url: str, tmp_path: Path
) -> None:
    base = smart_fhir_base_url
    examples = copy_clinic(tmp_path)
    transport = OutageTransport(smart)
    lines_before = len(LOG_CAPTURE.lines)
    try:
        with AllianceFhir(
            _settings(smart, base, tmp_path, "window-job", KEYS["RS384"]), transport=transport
        ) as api:
            # A fresh state store: each record is looked for and found (no assessments: the
            # slowest part to validate, and enough requests go out without them).
            api.seed(examples / "clinic" / "people.json")
            assert api.publish(labels_only=True).ok
            assert api.push_goals([examples / "goals"]).ok
    finally:
        if not smart.running():
            smart.apply()
    assert transport.stopped_at is not None
    assert transport.restarted_at is not None
    assert transport.restarted_at < 20  # restarted before the first token's end
    deferred = [
        line for line in LOG_CAPTURE.lines[lines_before:] if "fhir.token_refresh_deferred" in line
    ]
    assert deferred, "an early refresh failed while the provider was down"
    assert all(f"token endpoint 127.0.0.1:{smart.port}" in line for line in deferred)
    assert _exactly_once(smart, base) == EXPECTED
    assert not any(p in "\n".join(deferred) for p in PHI)
