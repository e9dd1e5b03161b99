"""A real OpenID provider for the SMART tests: ``scripts/oidc-provider`` driven from Python.

``OidcProvider`` owns the provider's JSON config (clients, their public keys, launch
contexts, the test user), writes it 0600, and starts, restarts or stops the provider on
one port. Changing a registration takes effect at the next ``restart()`` (how a test
revokes a key). ``TestKey`` makes an RS384 or ES384 key pair: the private PEM for our
client, the public JWK for the provider.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "oidc-provider"

#: What a SMART EHR-launch client asks for (issue #18).
EHR_LAUNCH_SCOPES = "launch openid fhirUser patient/*.rs patient/Task.u"


@dataclass(frozen=True)
class TestKey:
    """A client key pair: ``private_pem`` for our client, ``public_jwk`` for the provider."""

    __test__ = False  # not a pytest test class

    kid: str
    algorithm: str
    private_pem: str
    public_jwk: dict[str, Any]

    @classmethod
    def generate(cls, kid: str, algorithm: str = "RS384") -> TestKey:
        """A fresh RS384 (RSA 2048) or ES384 (P-384) key pair."""
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if algorithm == "RS384":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        elif algorithm == "ES384":
            key = ec.generate_private_key(ec.SECP384R1())
            jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        else:
            raise ValueError(f"unsupported algorithm {algorithm}")
        jwk.update(kid=kid, alg=algorithm, use="sig")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(kid=kid, algorithm=algorithm, private_pem=pem, public_jwk=jwk)


@dataclass
class OidcProvider:
    """One provider on ``port`` whose access tokens are for ``resource`` (a FHIR base URL)."""

    port: int
    resource: str
    workdir: Path
    access_token_ttl: int = 300
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    launch_contexts: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"oidc-provider-{self.port}.json"

    # -- registrations (written at the next start/restart) ------------------------------

    def register_backend_client(
        self,
        client_id: str,
        keys: list[TestKey],
        allowed_scope: str,
        *,
        access_token_ttl: int | None = None,
    ) -> None:
        """A SMART Backend Services client: client_credentials + private_key_jwt."""
        entry: dict[str, Any] = {
            "client_id": client_id,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [k.public_jwk for k in keys]},
            "allowed_scope": allowed_scope,
        }
        if access_token_ttl is not None:
            entry["access_token_ttl"] = access_token_ttl
        self.clients[client_id] = entry

    def register_launch_client(
        self,
        client_id: str,
        redirect_uris: list[str],
        *,
        allowed_scope: str = EHR_LAUNCH_SCOPES,
        client_secret: str | None = None,
    ) -> None:
        """A SMART app for EHR launch: authorization code + PKCE (public unless a secret)."""
        entry: dict[str, Any] = {
            "client_id": client_id,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "redirect_uris": redirect_uris,
            "allowed_scope": allowed_scope,
        }
        if client_secret is None:
            entry["token_endpoint_auth_method"] = "none"
        else:
            entry["client_secret"] = client_secret
            entry["token_endpoint_auth_method"] = "client_secret_basic"
        self.clients[client_id] = entry

    def add_user(self, account_id: str, fhir_user: str) -> None:
        """A user the provider logs in by itself (the first one added is the default)."""
        self.users[account_id] = {"fhirUser": fhir_user}

    def add_launch(self, launch: str, patient: str, user: str | None = None) -> None:
        """``launch`` (the EHR's opaque value) resolves to ``patient`` (and the user)."""
        context = {"patient": patient}
        if user is not None:
            context["user"] = user
        self.launch_contexts[launch] = context

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "resource": self.resource,
            "access_token_ttl": self.access_token_ttl,
            "clients": list(self.clients.values()),
            "users": self.users,
            "launch_contexts": self.launch_contexts,
        }
        path = self.config_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(config, out)
        return path

    # -- process ------------------------------------------------------------------------

    def script(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``scripts/oidc-provider ARGS --port N``; never raises on a non-zero exit."""
        return subprocess.run(
            ["bash", str(SCRIPT), *args, "--port", str(self.port)],
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        self.write_config()
        result = self.script("start", "--config", str(self.config_path))
        if result.returncode != 0:
            raise RuntimeError(
                f"oidc-provider start failed ({result.returncode}): {result.stderr[-2000:]}"
            )

    def apply(self) -> None:
        """Make the running provider use the current registrations (start or restart)."""
        if self.script("status").returncode == 0:
            self.restart()
        else:
            self.start()

    def restart(self) -> None:
        """Stop and start again with the current registrations (tokens' keys survive)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        self.script("stop")

    def running(self) -> bool:
        try:
            url = f"{self.issuer}/.well-known/openid-configuration"
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        log = REPO_ROOT / ".oidc-provider" / f"provider-{self.port}.log"
        return log.read_text(errors="replace") if log.exists() else ""
