"""Bearer-token authentication of export requests, shared by both receivers.

A request is allowed when it carries ``Authorization: Bearer TOKEN`` (gRPC: the ``authorization``
metadata key) with the configured token. The comparison takes the same time wherever the tokens
differ, and the token is never logged or put into an answer.
"""

from __future__ import annotations

import hmac

from sampler.tls import ServerTls

UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token"
HTTP_CHALLENGE = 'Bearer realm="agent-sampler"'


class BearerAuth:
    """Checks ``Authorization`` values against one token."""

    __slots__ = ("_expected",)

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("a bearer token must not be empty")
        self._expected = token.encode()

    def __repr__(self) -> str:
        return "BearerAuth(<token not shown>)"

    def allows(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <token>`` (scheme in any case, RFC 7235)."""
        if authorization is None:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = credentials.strip().encode("utf-8", errors="replace")
        return hmac.compare_digest(given, self._expected)


def security_summary(tls: ServerTls | None, auth: BearerAuth | None) -> str:
    """How a listener is protected, for its start-up log line (never the secrets)."""
    transport = "plaintext" if tls is None else "mutual TLS" if tls.mutual else "TLS"
    return f"{transport}, bearer token required" if auth is not None else transport
