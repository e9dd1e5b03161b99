"""Is a host this machine? One answer for every place that relaxes a rule for loopback.

Plain HTTP to the FHIR server, the SMART view's cookie without ``Secure``, the CDS Hooks
test setting for http JWKS: each is allowed only for traffic that never leaves the machine.
A string test such as ``host.startswith("127.")`` would also pass ``127.example.org``; the
address is parsed instead.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any 127.0.0.0/8 or ``::1`` address (brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
