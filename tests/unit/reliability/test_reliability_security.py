"""Security end to end through ``AllianceFhir``: TLS verification, tokens and next links,
server responses that are too large or malformed."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import FatalError

from .corpus import GOOD_ASSESSMENT

CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
}


# -- TLS ------------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(tmp: Path, label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} test CA"))
        .issuer_name(_name(f"{label} test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"{label}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert, ca_path = _ca(tmp, "clinic")
    _, _, other_ca = _ca(tmp, "other")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {"ca": ca_path, "other_ca": other_ca, "server": tmp / "server.pem"}


@pytest.fixture(scope="module")
def tls_server(pki: dict[str, Path]) -> Iterator[str]:
    """A tiny HTTPS FHIR 'server' (metadata only) with a certificate from our test CA."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = json.dumps(CAPABILITY).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


def _doctor(tmp_path: Path, **settings: object) -> tuple[bool, str | None]:
    values: dict[str, object] = {"state_path": tmp_path / "s.sqlite3", "retry_attempts": 1}
    with AllianceFhir(Settings(**{**values, **settings})) as api:  # type: ignore[arg-type]
        report = api.doctor()
    return report.reachable, report.error


def test_tls_is_verified_by_default_and_an_unknown_ca_is_refused(
    tls_server: str, tmp_path: Path
) -> None:
    reachable, error = _doctor(tmp_path, server_url=tls_server)
    assert not reachable
    assert error is not None
    assert "certificate" in error.lower()


def test_a_custom_ca_bundle_is_trusted(
    tls_server: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    reachable, error = _doctor(tmp_path, server_url=tls_server, ca_bundle=pki["ca"])
    assert reachable, error


def test_a_bundle_of_another_ca_does_not_help(
    tls_server: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    reachable, _ = _doctor(tmp_path, server_url=tls_server, ca_bundle=pki["other_ca"])
    assert not reachable


def test_turning_verification_off_works_but_warns(tls_server: str, tmp_path: Path) -> None:
    stream = io.StringIO()
    alog.configure(level="INFO", json=True, stream=stream)
    try:
        reachable, error = _doctor(tmp_path, server_url=tls_server, verify_tls=False)
    finally:
        alog.configure(level="WARNING")
    assert reachable, error
    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(
        w["event"] == "fhir.tls_verification_disabled" and w["level"] == "warning" for w in warnings
    )


# -- tokens and next links ------------------------------------------------------------------

TOKEN = "tok-abc-123-never-elsewhere"


def _bundle(resources: list[dict[str, object]], next_url: str | None = None) -> dict[str, object]:
    bundle: dict[str, object] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example/fhir/Goal?page=2",
        "http://ehr.example/fhir/Goal?page=2",  # same host, other scheme
        "https://ehr.example:8443/fhir/Goal?page=2",  # same host, other port
    ],
)
def test_the_bearer_token_never_follows_a_next_link_to_another_origin(
    foreign: str, tmp_path: Path
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/Patient"):
            body = _bundle([{"resourceType": "Patient", "id": "p1"}])
        elif path.endswith("/Goal"):
            body = _bundle([{"resourceType": "Goal", "id": "g1"}], next_url=foreign)
        else:
            body = _bundle([])
        return httpx.Response(200, json=body, headers={"Content-Type": "application/fhir+json"})

    settings = Settings(
        server_url="https://ehr.example/fhir",
        auth="bearer",
        token=TOKEN,  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
        state_path=tmp_path / "s.sqlite3",
    )
    with (
        AllianceFhir(settings, transport=httpx.MockTransport(handler)) as api,
        pytest.raises(FatalError, match="another origin"),
    ):
        api.pull_plans("http://example-clinic.org/mrn|MRN-1001")
    assert seen, "no request was made"
    for request in seen:
        assert (request.url.scheme, request.url.host, request.url.port) == (
            "https",
            "ehr.example",
            None,
        )
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert all(str(r.url) != foreign for r in seen)


# -- responses we do not trust ---------------------------------------------------------------


def _push_against(handler: httpx.MockTransport, tmp_path: Path) -> tuple[AllianceFhir, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.yaml").write_text(GOOD_ASSESSMENT, encoding="utf-8")
    settings = Settings(
        server_url="https://ehr.example/fhir",
        state_path=tmp_path / "s.sqlite3",
        retry_attempts=1,
    )
    return AllianceFhir(settings, transport=handler), folder


def _people_then(transaction: httpx.Response) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(
                200,
                json=_bundle(
                    [
                        {
                            "resourceType": "Patient",
                            "id": "p1",
                            "identifier": [
                                {"system": "http://example-clinic.org/mrn", "value": "MRN-9001"}
                            ],
                        }
                    ]
                ),
                headers={"Content-Type": "application/fhir+json"},
            )
        return transaction

    return httpx.MockTransport(handler)


def _chunks(total: int) -> Iterator[bytes]:
    chunk = b" " * (1024 * 1024)
    for _ in range(total // len(chunk) + 1):
        yield chunk


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (
            httpx.Response(
                200,
                headers={"Content-Type": "application/fhir+json", "Content-Length": str(65 << 20)},
                content=b"{}",
            ),
            "exceeds",
        ),
        (None, "exceeds"),  # built in the test: 65 MiB streamed without a length
        (
            httpx.Response(200, text="<html>ok</html>", headers={"Content-Type": "text/html"}),
            "not JSON",
        ),
        (
            httpx.Response(
                200, content=b"{not json", headers={"Content-Type": "application/fhir+json"}
            ),
            "not valid JSON",
        ),
        (
            httpx.Response(200, json=[1, 2], headers={"Content-Type": "application/fhir+json"}),
            "not an object",
        ),
    ],
    ids=["declared-too-large", "streamed-too-large", "html", "broken-json", "json-array"],
)
def test_oversized_or_malformed_transaction_responses_are_refused_and_nothing_is_recorded(
    response: httpx.Response | None, reason: str, tmp_path: Path
) -> None:
    if response is None:
        response = httpx.Response(
            200,
            headers={"Content-Type": "application/fhir+json"},
            content=_chunks(65 << 20),
        )
    api, folder = _push_against(_people_then(response), tmp_path)
    with api, pytest.raises(FatalError, match=reason):
        api.push_assessments([folder])
    with AllianceFhir(Settings(state_path=tmp_path / "s.sqlite3")) as again:
        assert again.status().records == {}  # nothing was trusted as written
