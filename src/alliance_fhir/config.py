"""Effective configuration: defaults < TOML file < ``ALLIANCE_FHIR_*`` environment.

Secrets never live in this object as plain values and never come from argv or the TOML file
(which is copied, shared and checked in): the environment or a file holds them, and
``Settings.secret`` reads it at the last moment, warning as ssh does when others may read the
file. ``server_url`` never carries ``user:password@``.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.log import get_logger, register_sensitive

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_FILE", "CdsIssuer", "Settings", "load_settings"]

CONFIG_ENV = "ALLIANCE_FHIR_CONFIG"
DEFAULT_CONFIG_FILE = "alliance-fhir.toml"

#: Resource types ``write_modes`` may name: those sync writes (``sync.strategies.WRITTEN_TYPES``,
#: which a unit test keeps equal; config is a leaf and cannot import it).
WRITE_MODE_TYPES = (
    "QuestionnaireResponse",
    "Observation",
    "Goal",
    "CarePlan",
    "Task",
    "CodeSystem",
    "Questionnaire",
    "Flag",
)

#: A tenant's name: a slug, so it is safe in file names, environment variable names (``-`` read
#: as ``_``) and PostgreSQL schema names.
TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
#: A PostgreSQL schema we create and name unquoted-safe.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Keys whose values are secrets: refused in the TOML file, with where to put them instead.
_SECRET_KEYS = {
    "token": "ALLIANCE_FHIR_TOKEN or token_file",
    "password": "ALLIANCE_FHIR_PASSWORD or password_file",
    "private_key": "smart_private_key_file",
    "smart_private_key": "smart_private_key_file",
    "client_secret": "smart_private_key_file (SMART Backend Services uses a key, not a secret)",
    "state_password": "ALLIANCE_FHIR_STATE_PASSWORD or state_password_file",
    "checkin_secret": "ALLIANCE_FHIR_CHECKIN_SECRET or checkin_secret_file",
}


class CdsIssuer(BaseModel):
    """An EHR allowed to call the CDS Hooks service (``cds_issuers``, keyed by its JWT ``iss``).

    Its JWT signing keys come from ``jwks_url``, or from the JWT's ``jku`` header when that URL
    is one of ``jku``; ``fhir_servers``, when given, are the only ``fhirServer`` URLs its
    requests may name (the service sends the EHR's token there).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    jwks_url: str | None = None
    jku: list[str] = Field(default_factory=list)
    fhir_servers: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    """Everything a run needs. Field names map to ``ALLIANCE_FHIR_<NAME>`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="ALLIANCE_FHIR_", extra="forbid", validate_default=True
    )
    toml_path: ClassVar[Path | None] = None

    # The server
    server_url: str = "http://127.0.0.1:8080/fhir"
    auth: Literal["none", "basic", "bearer", "smart"] = "none"
    basic_user: str | None = None
    password: SecretStr | None = Field(default=None, description="basic auth password (env only)")
    password_file: Path | None = None
    token: SecretStr | None = Field(default=None, description="static bearer token (env only)")
    token_file: Path | None = None
    smart_client_id: str | None = None
    smart_private_key_file: Path | None = None
    smart_key_id: str | None = None
    smart_algorithm: Literal["RS384", "ES384"] = "RS384"
    smart_scopes: str = "system/*.rs system/*.cud"
    smart_token_url: str | None = None
    allow_insecure_http: bool = Field(
        default=False, description="allow credentials over plain http:// to a remote host"
    )
    verify_tls: bool = True
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_attempts: int | None = Field(default=None, ge=1)
    retry_deadline_seconds: float = Field(default=120.0, gt=0)

    # Our namespace
    identifier_namespace: str = DEFAULT_NAMESPACE
    canonical_base: str = DEFAULT_CANONICAL_BASE
    mappings_dir: Path | None = Field(default=None, description="clinic instruments, rules, maps")
    overlay_dir: Path | None = Field(default=None, description="licensee wording overlays")

    # People in form fillers' exports (subject/author given only as a reference)
    patient_map: dict[str, str] = Field(
        default_factory=dict, description="reference (Patient/123) -> system|value"
    )
    patient_identifier_system: str | None = Field(
        default=None, description="the identifier of a server Patient we name it by (MRN)"
    )

    # Sync
    state_path: Path = Path(".alliance-fhir/state.sqlite3")
    state_url: str | None = Field(
        default=None,
        description="sqlite:///PATH (default: state_path) or postgresql://USER@HOST:PORT/DB",
    )
    state_password: SecretStr | None = Field(
        default=None, description="PostgreSQL state store password (env only)"
    )
    state_password_file: Path | None = None
    state_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema of the state store, created when missing (default: the "
        "connection's search_path; a tenant's: tenant_<name>)",
    )
    bundle_size: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=2, ge=1, le=32)
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="HTTP connections to the server (default: "
        "max(4, 2 x concurrency)); per tenant, so one clinic's server cannot take another's",
    )
    #: ``overwrite`` is the older name of ``ours-wins`` (kept so old files still load).
    conflict_policy: Literal["skip", "ehr-wins", "ours-wins", "overwrite"] = "skip"
    assessments: list[Path] = Field(default_factory=list, description="inputs for `sync`")
    goals: list[Path] = Field(default_factory=list, description="goal plans for `sync`")
    pull_overlap_seconds: int = Field(default=300, ge=0)
    write_mode: Literal["auto", "transaction", "batch", "single"] = Field(
        default="auto",
        description="auto: the strongest the CapabilityStatement offers (transaction, batch, "
        "single requests); set it for a server whose statement is wrong",
    )
    conditional_create: Literal["auto", "trust", "lookup"] = Field(
        default="auto",
        description="auto: as the statement declares; trust: rely on If-None-Exist; lookup: "
        "search our identifiers before every create (servers that ignore If-None-Exist)",
    )
    # EHR compatibility (issue #13): per-type write switches and how alerts degrade
    write_modes: dict[str, Literal["auto", "transaction", "batch", "single"]] = Field(
        default_factory=dict,
        description="per resource type, a write_mode overriding the statement for that type "
        '(e.g. [write_modes] Observation = "single")',
    )
    alert_resources: Literal["auto", "flag+task", "task", "report"] = Field(
        default="auto",
        description="what carries the monitor's alerts: auto: Flag + Task where the server "
        "takes both, Task only where it takes no Flag, only the run's report where it takes "
        "neither",
    )
    # Bulk Data pulls (issue #17): the monitor pulls through $export where the server offers
    # it and the pull covers more than bulk_threshold responses
    bulk_threshold: int = Field(
        default=10_000,
        ge=0,
        description="pull through the server's $export when the monitor's pull covers more "
        "responses than this (counted with _summary=count); otherwise paged search",
    )
    bulk_poll_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="the longest wait between $export status polls, whatever Retry-After says",
    )
    bulk_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="give up on (and delete) an $export job after this"
    )

    # Mapping
    validation: Literal["shape", "full"] = Field(
        default="shape",
        validation_alias=AliasChoices("validate", "alliance_fhir_validate"),
        description="shape: fhir.resources validates each shape of resource once, then each "
        "record's values are checked with its primitive types; full: every resource through "
        "fhir.resources (slower, same output)",
    )

    # Daemon
    inbox_dir: Path = Path(".alliance-fhir/inbox")
    interval_seconds: float = Field(default=300.0, gt=0)
    interval_jitter: float = Field(default=0.1, ge=0, le=1)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Several daemons on one PostgreSQL state store (daemon.workers, issue #17).
    lease_seconds: float = Field(
        default=60.0, gt=0, description="a work item's lease; renewed every third of it"
    )
    drain_seconds: float = Field(
        default=60.0, gt=0, description="on SIGTERM, how long the item in hand may take"
    )

    # CDS Hooks service (`alliance-fhir serve`: /cds-services)
    cds_public_url: str | None = Field(
        default=None,
        description="our base URL as the EHR calls it: JWT aud is <it>/cds-services/<id>, "
        "the cards' SMART link <it>/launch",
    )
    cds_issuers: dict[str, CdsIssuer] = Field(
        default_factory=dict, description="EHRs allowed to call: JWT iss -> jwks_url, jku, ..."
    )
    cds_allow_loopback_http: bool = Field(
        default=False,
        description="tests only: JWKS and fhirServer over plain http:// on loopback",
    )
    cds_fetch_timeout_seconds: float = Field(default=5.0, gt=0)

    # Check-in links (`alliance-fhir checkin link`, the page of `alliance-fhir serve`)
    checkin_secret: SecretStr | None = Field(
        default=None, description="key of the check-in links (env only)"
    )
    checkin_secret_file: Path | None = None
    checkin_base_url: str = Field(
        default="http://127.0.0.1:8765", description="where clients open check-in links"
    )

    # SMART clinician view (`serve`): a public client (PKCE), launched by these servers only
    smart_app_client_id: str | None = Field(default=None, description="our client_id at the EHR")
    smart_app_issuers: list[str] = Field(
        default_factory=list, description="FHIR base URLs (iss) allowed to launch the view"
    )
    smart_app_url: str | None = Field(
        default=None, description="our public base URL; the redirect URI is <it>/callback"
    )
    smart_app_scopes: str = "launch openid fhirUser patient/*.rs patient/Task.u"
    smart_app_session_minutes: float = Field(default=60.0, gt=0)
    smart_app_max_sessions: int = Field(default=500, ge=1)

    # Tenants (issue #17): several clinics in one deployment (``alliance_fhir.tenants``)
    tenants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="[tenants.NAME] sections: a clinic's own server, credentials, namespaces, "
        "sources and state; every other setting is inherited from the top level",
    )
    tenant: str | None = Field(
        default=None,
        description="the tenant these settings are for (--tenant, ALLIANCE_FHIR_TENANT)",
    )

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool | None = None

    @field_validator("server_url", "canonical_base", "identifier_namespace")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "urn:")):
            raise ValueError("must be an absolute URL")
        authority = value.split("://", 1)[-1].split("/", 1)[0]
        if "@" in authority:
            # Not the value in the message: it is the secret.
            raise ValueError(
                "must not contain user:password@; set basic_user, and password_file or "
                "ALLIANCE_FHIR_PASSWORD"
            )
        return value.rstrip("/")

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("sqlite:///"):
            return value
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        authority = value.split("://", 1)[1].split("/", 1)[0]
        query = value.partition("?")[2].lower()
        if ":" in authority.rpartition("@")[0] or "password=" in query:
            # Not the value in the message: it is the secret.
            raise ValueError(
                "must not contain a password; use state_password_file or "
                "ALLIANCE_FHIR_STATE_PASSWORD"
            )
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not TENANT_NAME.fullmatch(name):
                raise ValueError(
                    f"[tenants.{name}]: not a tenant name: use 1-32 of a-z, 0-9 and -, "
                    "starting and ending with a letter or digit"
                )
        return value

    @field_validator("state_schema")
    @classmethod
    def _schema_name(cls, value: str | None) -> str | None:
        if value is not None and not SCHEMA_NAME.fullmatch(value):
            raise ValueError("must be 1-63 of a-z, 0-9 and _, starting with a letter or _")
        return value

    @property
    def effective_state_url(self) -> str:
        """``state_url``, or the SQLite file ``state_path`` names (the default)."""
        return self.state_url or f"sqlite:///{self.state_path}"

    @field_validator("write_modes")
    @classmethod
    def _written_types_only(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(WRITE_MODE_TYPES))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not a resource type sync writes "
                f"(one of {', '.join(WRITE_MODE_TYPES)})"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)

    def secret(
        self, name: Literal["password", "token", "state_password", "checkin_secret"]
    ) -> str | None:
        """The secret's value, from the environment or its file; registered for redaction."""
        value: SecretStr | None = getattr(self, name)
        path: Path | None = getattr(self, f"{name}_file")
        text: str | None = None
        if value is not None:
            text = value.get_secret_value()
        elif path is not None:
            try:
                text = path.read_text(encoding="utf-8").strip()
                warn_if_readable_by_others(path, f"{name}_file")
            except OSError as exc:
                raise ConfigError(f"cannot read {name}_file {path}: {exc.strerror}") from exc
        register_sensitive(text)
        return text

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for ``config show``."""
        out = self.model_dump(mode="json")
        for key in ("password", "token", "state_password", "checkin_secret"):
            if out.get(key) is not None:
                out[key] = "********"
        return out


def warn_if_readable_by_others(path: Path, what: str) -> bool:
    """Warn (as ssh does for keys) when group or others may read a secret's file; True then."""
    mode = path.stat().st_mode
    if os.name != "posix" or not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    get_logger("alliance_fhir.config").warning(
        "config.secret_file_permissions",
        setting=what,
        path=str(path),
        mode=oct(mode & 0o777),
        fix=f"chmod 600 {path}",
    )
    return True


def _refuse_secrets_in(path: Path) -> None:
    """ConfigError naming the first secret written in the TOML file (never its value)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return  # the settings source reports an unreadable file in its own words
    sections: list[tuple[str | None, dict[str, Any]]] = [(None, data)]
    tenants = data.get("tenants")
    if isinstance(tenants, dict):
        sections += [(n, t) for n, t in tenants.items() if isinstance(t, dict)]
    for tenant, section in sections:
        for key, instead in _SECRET_KEYS.items():
            if key in section:
                where = ""
                if tenant is not None:  # a tenant's secret has its own variable
                    where = f"[tenants.{tenant}] "
                    instead = instead.replace("ALLIANCE_FHIR_", tenant_env_prefix(tenant))
                raise ConfigError(
                    f"{path}: {where}{key} is a secret and is not read from the config file "
                    f"(it gets copied and shared); use {instead}"
                )


def tenant_env_prefix(tenant: str) -> str:
    """``clinic-a`` -> ``ALLIANCE_FHIR_TENANT_CLINIC_A_``: where that tenant's secrets are."""
    return f"ALLIANCE_FHIR_TENANT_{tenant.upper().replace('-', '_')}_"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from the named TOML file (or ``$ALLIANCE_FHIR_CONFIG``, or
    ``./alliance-fhir.toml`` when present), the environment, then explicit overrides."""
    path = config_file
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path is not None:
        _refuse_secrets_in(path)
    Settings.toml_path = path
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        where = str(path) if path else "environment"
        lines = [
            f"{where}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    finally:
        # The file is read once, here: a Settings made later (a test, an embedding job) must
        # not silently pick up whichever file the last load named.
        Settings.toml_path = None
