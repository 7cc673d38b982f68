"""What happened, from an SDK's exception: the one rule the cloud backends classify by.

SDKs wrap a network failure in their own exceptions, sometimes in one that says
"authentication": qiskit-ibm-runtime raises ``InvalidAccountError`` ("check that you are
using a valid API token") when IBM Cloud cannot be reached at all, azure-identity a
``ClientAuthenticationError`` when Entra ID cannot be reached. Classifying by the
outermost type would report an unreachable host as rejected credentials: a permanent
error, which a cluster never retries. :func:`unreachable` instead looks through the whole
cause chain for a failure to connect (refused, reset, timed out, name not resolved), and a
backend file reports that as transient unless an HTTP status says otherwise
(:func:`rejected_status`: a 401/403 the server actually sent).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

#: Exception type names (any module) that mean "no connection", for SDK types not imported.
_NETWORK_TYPES = {
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "NewConnectionError",
    "MaxRetryError", "NameResolutionError", "ConnectTimeoutError", "ProtocolError",
    "ServiceRequestError", "ServiceRequestTimeoutError", "ServiceResponseTimeoutError",
    "ConnectError", "TimeoutException", "ClientConnectorError",
    "ServerDisconnectedError", "RemoteDisconnected",
}


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes / contexts, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def unreachable(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain that says the host could not be reached or did not
    answer in time (connection refused/reset, timeout, DNS failure), or None."""
    for current in chain(exc):
        if isinstance(current, (ConnectionError, TimeoutError, socket.gaierror)):
            return current
        if type(current).__name__ in _NETWORK_TYPES:
            return current
    return None


def rejected_status(codes: set[int] | list[int]) -> int | None:
    """401 or 403 if the server sent it (the credentials or permissions were refused)."""
    for code in (401, 403):
        if code in codes:
            return code
    return None
