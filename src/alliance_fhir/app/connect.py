"""Building a FhirClient from Settings: the one place configuration meets the transport."""

from __future__ import annotations

import httpx

from alliance_fhir.config import Settings, tenant_env_prefix
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.fhir import (
    Auth,
    BasicAuth,
    BearerTokenAuth,
    FhirClient,
    RetryPolicy,
    Secret,
    SmartBackendAuth,
)


def auth_from_settings(settings: Settings) -> Auth | None:
    """The configured authentication; secrets are read here, from env or file, never argv."""
    if settings.auth == "none":
        return None
    # a tenant's secrets have variables of their own (alliance_fhir.tenants)
    env = tenant_env_prefix(settings.tenant) if settings.tenant else "ALLIANCE_FHIR_"
    if settings.auth == "basic":
        if not settings.basic_user:
            raise ConfigError("auth=basic needs basic_user")
        password = settings.secret("password")
        if not password:
            raise ConfigError(f"auth=basic needs {env}PASSWORD or password_file")
        return BasicAuth(settings.basic_user, Secret(password, origin="config"))
    if settings.auth == "bearer":
        token = settings.secret("token")
        if not token:
            raise ConfigError(f"auth=bearer needs {env}TOKEN or token_file")
        return BearerTokenAuth(Secret(token, origin="config"))
    if not (settings.smart_client_id and settings.smart_private_key_file and settings.smart_key_id):
        raise ConfigError(
            "auth=smart needs smart_client_id, smart_key_id and smart_private_key_file"
        )
    return SmartBackendAuth(
        client_id=settings.smart_client_id,
        private_key=Secret.from_file(settings.smart_private_key_file),
        key_id=settings.smart_key_id,
        scopes=settings.smart_scopes,
        token_endpoint=settings.smart_token_url,
        algorithm=settings.smart_algorithm,
        allow_insecure_http=settings.allow_insecure_http,
    )


def connect(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> FhirClient:
    """A client for the configured server (``transport`` is the seam tests use)."""
    verify: bool | str = settings.verify_tls
    if settings.verify_tls and settings.ca_bundle is not None:
        verify = str(settings.ca_bundle)
    return FhirClient(
        settings.server_url,
        auth=auth_from_settings(settings),
        transport=transport,
        timeout=settings.timeout_seconds,
        retry=RetryPolicy(
            max_attempts=settings.retry_attempts, deadline=settings.retry_deadline_seconds
        ),
        verify=verify,
        max_connections=settings.max_connections or max(4, settings.concurrency * 2),
        allow_insecure_http=settings.allow_insecure_http,
    )
