"""The FHIR R4 client: transport, auth, errors, retries, paging, capability checks.

Everything a caller needs is importable from here; the ``_``-prefixed modules are private.
Errors are the ones in ``alliance_fhir.exceptions`` (RetriableError, ConflictError,
ServerRejectedError, FatalError), translated from httpx in ``_errors`` only.
"""

from alliance_fhir.fhir._auth import (
    Auth,
    AuthContext,
    BasicAuth,
    BearerTokenAuth,
    Secret,
    SmartBackendAuth,
)
from alliance_fhir.fhir._errors import parse_retry_after
from alliance_fhir.fhir._requests import EncodedJson, Params, bundle_is_idempotent
from alliance_fhir.fhir._results import (
    FhirResponse,
    ReadResult,
    WriteResult,
    entry_results,
    etag_for,
    version_from_etag,
)
from alliance_fhir.fhir._retry import RetryPolicy
from alliance_fhir.fhir.capability import (
    OPTIONAL_WRITE_TYPES,
    REQUIRED_INTERACTIONS,
    REQUIRED_SYSTEM_INTERACTIONS,
    Capabilities,
    TypeCapability,
    WriteMode,
    check_server,
    missing_capabilities,
    probe,
    statement_to_write,
)
from alliance_fhir.fhir.client import FHIR_JSON, FhirClient

__all__ = [
    "FHIR_JSON",
    "OPTIONAL_WRITE_TYPES",
    "REQUIRED_INTERACTIONS",
    "REQUIRED_SYSTEM_INTERACTIONS",
    "Auth",
    "AuthContext",
    "BasicAuth",
    "BearerTokenAuth",
    "Capabilities",
    "EncodedJson",
    "FhirClient",
    "FhirResponse",
    "Params",
    "ReadResult",
    "RetryPolicy",
    "Secret",
    "SmartBackendAuth",
    "TypeCapability",
    "WriteMode",
    "WriteResult",
    "bundle_is_idempotent",
    "check_server",
    "entry_results",
    "etag_for",
    "missing_capabilities",
    "parse_retry_after",
    "probe",
    "statement_to_write",
    "version_from_etag",
]
