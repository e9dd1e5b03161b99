"""The EHR's side of a CDS Hooks call, for the CDS benchmark and tests: signing keys (RS384,
ES384), their JWKS served over loopback HTTP, signed JWTs with the specification's claims,
and ``patient-view`` request bodies shaped like the specification's examples."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["EhrKey", "Jwks", "bundle", "call", "serve_jwks", "sign"]


@dataclass
class EhrKey:
    """One of the EHR's signing keys (RS384 or ES384) and its public JWK."""

    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    @classmethod
    def make(cls, alg: str, kid: str | None = None) -> EhrKey:
        private: Any
        if alg == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
            algo: Any = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA384)
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA384)
        jwk = json.loads(algo.to_jwk(private.public_key()))
        kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        jwk |= {"kid": kid, "alg": alg, "use": "sig"}
        return cls(kid, alg, private, jwk)


@dataclass
class Jwks:
    """A JWKS document served over loopback HTTP (a real fetch, as from an EHR)."""

    keys: list[EhrKey] = field(default_factory=list)
    hits: int = 0
    url: str = ""


@contextmanager
def serve_jwks(jwks: Jwks) -> Iterator[Jwks]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            jwks.hits += 1
            body = json.dumps({"keys": [k.jwk for k in jwks.keys]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    jwks.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield jwks
    finally:
        server.shutdown()
        server.server_close()


def sign(
    key: EhrKey,
    *,
    aud: str | list[str],
    iss: str,
    lifetime: int = 300,
    iat: float | None = None,
    jti: str | None = None,
    jku: str | None = None,
    drop: Sequence[str] = (),
    alg: str | None = None,
) -> str:
    """An EHR's CDS Hooks JWT (the specification's claims; ``drop`` leaves claims out)."""
    now = time.time() if iat is None else iat
    claims: dict[str, Any] = {
        "iss": iss,
        "sub": "ehr-client-id",
        "aud": aud,
        "exp": int(now + lifetime),
        "iat": int(now),
        "jti": jti or str(uuid.uuid4()),
        "tenant": "clinic-1",
    }
    for name in drop:
        claims.pop(name, None)
    headers: dict[str, Any] = {"kid": key.kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(claims, key.private, algorithm=alg or key.alg, headers=headers)


def call(
    patient_id: str,
    *,
    prefetch: Mapping[str, Any] | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A ``patient-view`` request as the specification's example shapes it."""
    body: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()),
        "hook": "patient-view",
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Patient.read patient/Observation.read",
            "subject": "alliance-cds",
        }
    if prefetch is not None:
        body["prefetch"] = dict(prefetch)
    return body


def bundle(
    resources: Sequence[Mapping[str, Any]], *, next_url: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": dict(r), "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out
