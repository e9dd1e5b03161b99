"""alliance-fhir: therapeutic-alliance instruments and collaborative goals over FHIR R4."""

__version__ = "0.1.0"
