"""The shared store's address: ``redis://`` or ``rediss://`` (TLS), checked without connecting.

The URL may carry a password, so a problem is described without quoting it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

REDIS_URL_FORMS = "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or rediss://... (TLS)"


@dataclass(frozen=True, slots=True)
class StoreAddress:
    host: str
    port: int
    tls: bool
    db: int

    @property
    def shown(self) -> str:
        """Where the store is, for logs: no user, no password."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parse_store_url(url: str) -> StoreAddress:
    """Raises ValueError, saying what is wrong but never quoting the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a URL of the form {REDIS_URL_FORMS}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"the scheme must be redis or rediss: {REDIS_URL_FORMS}")
    if not parts.hostname:
        raise ValueError(f"the URL names no host: {REDIS_URL_FORMS}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number: {REDIS_URL_FORMS}")
    if parts.query or parts.fragment:
        raise ValueError(f"the URL may not have a query or fragment: {REDIS_URL_FORMS}")
    return StoreAddress(
        host=parts.hostname,
        port=port if port is not None else 6379,
        tls=scheme == "rediss",
        db=int(path or 0),
    )
