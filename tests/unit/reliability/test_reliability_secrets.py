"""Transport and secrets: credentials never cross plain HTTP to another machine, secrets
never sit in the config file or the server URL, secret files readable by others are warned
about, and the log scrubber masks values without garbling our own messages."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.cli import main
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.fhir import BearerTokenAuth, FhirClient, Secret, SmartBackendAuth

TOKEN = "tok-3f9a1c77e2b84d0c"
CAPABILITY = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in ("ALLIANCE_FHIR_CONFIG", "ALLIANCE_FHIR_TOKEN", "ALLIANCE_FHIR_AUTH"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    alog.configure(level="INFO", json=True, stream=stream)
    yield stream
    alog.configure(level="WARNING")


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=CAPABILITY)


# -- plain HTTP ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://fhir.example.org/fhir", "http://10.1.2.3/fhir"])
def test_a_token_is_never_sent_over_plain_http_to_another_machine(url: str) -> None:
    settings = Settings(server_url=url, auth="bearer", token=TOKEN)
    with pytest.raises(ConfigError, match="refusing to send credentials over plain http://"):
        AllianceFhir(settings, transport=httpx.MockTransport(_answer)).client.capabilities()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/fhir", "http://127.0.0.2/fhir", "http://localhost/fhir"]
)
def test_loopback_over_plain_http_keeps_working(url: str) -> None:
    settings = Settings(server_url=url, auth="bearer", token=TOKEN)
    api = AllianceFhir(settings, transport=httpx.MockTransport(_answer))
    assert api.client.capabilities()["fhirVersion"] == "4.0.1"


def test_allow_insecure_http_lets_the_operator_decide() -> None:
    settings = Settings(
        server_url="http://fhir.example.org/fhir",
        auth="bearer",
        token=TOKEN,
        allow_insecure_http=True,
    )
    api = AllianceFhir(settings, transport=httpx.MockTransport(_answer))
    assert api.client.capabilities()["fhirVersion"] == "4.0.1"


def test_without_credentials_plain_http_is_allowed() -> None:
    client = FhirClient("http://fhir.example.org/fhir", transport=httpx.MockTransport(_answer))
    assert client.capabilities()["fhirVersion"] == "4.0.1"
    with pytest.raises(ConfigError):
        FhirClient("http://fhir.example.org/fhir", auth=BearerTokenAuth(Secret(TOKEN)))


def test_a_smart_token_endpoint_over_plain_http_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ConfigError, match="SMART client assertion"):
        SmartBackendAuth(
            client_id="c",
            private_key=Secret(pem),
            key_id="k",
            scopes="system/*.rs",
            token_endpoint="http://auth.example.org/token",
        )


def test_the_cli_exits_2_with_the_reason(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_AUTH", "bearer")
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", TOKEN)
    result = cli.invoke(main, ["--server-url", "http://fhir.example.org/fhir", "doctor"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith(
        "error: refusing to send credentials over plain http:// to fhir.example.org: use "
        "https://, or set allow_insecure_http = true"
    )
    assert TOKEN not in result.output


# -- secrets in the wrong place -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("token", "ALLIANCE_FHIR_TOKEN or token_file"),
        ("password", "ALLIANCE_FHIR_PASSWORD or password_file"),
        ("private_key", "smart_private_key_file"),
    ],
)
def test_a_secret_written_in_the_config_file_is_refused(
    cli: CliRunner, key: str, instead: str
) -> None:
    Path("alliance-fhir.toml").write_text(f'auth = "bearer"\n{key} = "{TOKEN}"\n')
    result = cli.invoke(main, ["config", "show"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: alliance-fhir.toml: {key} is a secret and is not read from the config file "
        f"(it gets copied and shared); use {instead}\n"
    )
    assert TOKEN not in result.output


def test_a_password_inside_server_url_is_refused_and_never_printed(cli: CliRunner) -> None:
    Path("alliance-fhir.toml").write_text(
        'server_url = "https://clinic:pa55-w0rd-x@fhir.example.org/fhir"\n'
    )
    result = cli.invoke(main, ["config", "show"])
    assert result.exit_code == 2
    assert "pa55-w0rd-x" not in result.output
    assert "basic_user" in result.stderr
    assert "password_file" in result.stderr


def test_secrets_from_the_environment_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", TOKEN)
    assert load_settings(None).secret("token") == TOKEN


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_token_file_readable_by_others_is_warned_about(
    tmp_path: Path, log_lines: io.StringIO, mode: int, warned: bool
) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    assert Settings(auth="bearer", token_file=path).secret("token") == TOKEN
    events = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    found = [e for e in events if e["event"] == "config.secret_file_permissions"]
    assert bool(found) == warned
    if warned:
        assert found[0]["mode"] == oct(mode)
        assert found[0]["fix"] == f"chmod 600 {path}"
    assert TOKEN not in log_lines.getvalue()


# -- the scrubber ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "auth=bearer needs ALLIANCE_FHIR_TOKEN or token_file",
        "auth=basic needs basic_user",
        "the server asked for Basic authentication",
    ],
)
def test_the_scrubber_leaves_our_own_messages_readable(message: str) -> None:
    assert alog.scrub(message) == message


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("Authorization: Bearer abc.def-123456", "Authorization: Bearer [redacted]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [redacted]"),
        ("bearer s3cr3t_t0ken_value", "bearer [redacted]"),
    ],
)
def test_the_scrubber_still_masks_credentials(text: str, scrubbed: str) -> None:
    assert alog.scrub(text) == scrubbed


def test_the_auth_message_reaches_the_user_whole(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_AUTH", "bearer")
    result = cli.invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert result.stderr == "error: auth=bearer needs ALLIANCE_FHIR_TOKEN or token_file\n"
