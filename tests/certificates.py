"""Certificates generated for the TLS tests (trustme): one CA, a server certificate for
``localhost`` and ``127.0.0.1``, one for ``backend.internal`` only, and a client certificate,
written as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

NAMED_HOST = "backend.internal"


@dataclass(frozen=True)
class Certificates:
    """PEM files in one directory; ``ca`` signed both certificates, ``other_ca`` neither."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    named_cert: Path  # names backend.internal only: reached on 127.0.0.1 it needs an override
    named_key: Path

    def read(self, name: str) -> bytes:
        path: Path = getattr(self, name)
        return path.read_bytes()


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("agent-sampler-test-client")
    named = ca.issue_cert(NAMED_HOST)
    paths = Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
        named_cert=directory / "named.pem",
        named_key=directory / "named.key",
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    trustme.CA().cert_pem.write_to_path(str(paths.other_ca))
    for blob_owner, cert_path, key_path in (
        (server, paths.server_cert, paths.server_key),
        (client, paths.client_cert, paths.client_key),
        (named, paths.named_cert, paths.named_key),
    ):
        cert_path.write_bytes(b"".join(blob.bytes() for blob in blob_owner.cert_chain_pems))
        blob_owner.private_key_pem.write_to_path(str(key_path))
    return paths
