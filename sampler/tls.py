"""TLS material named in the config, loaded once at start for both sides of the sampler.

- ``ServerTls`` (the receivers): a certificate and its key, and optionally the CA certificates
  that clients must present a certificate from (mutual TLS).
- ``ClientTls`` (the exporter): the CA certificates that verify the downstream (else the
  system's roots), optionally a client certificate, and a name to verify instead of the host.

Each is offered in the two forms the transports take: an ``ssl.SSLContext`` for aiohttp and
grpc credentials built from the PEM bytes. Everything is validated with ``ssl`` when loaded, so a
key that does not match its certificate, or a file that is not PEM, stops the process at start
with a message naming the key and the file, instead of failing every handshake later.
"""

from __future__ import annotations

import ssl

import grpc

MAX_PEM_BYTES = 1 << 20  # a certificate bundle is kilobytes; refuse to read anything huge


class TlsError(ValueError):
    """A TLS file that cannot be used; the message names the config key and the file."""


def _refuse_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's password.
    raise TlsError("encrypted private keys are not supported")


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"{key}: cannot read {path!r}: {exc.strerror}") from exc
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"{key}: {path!r} is larger than {MAX_PEM_BYTES} bytes")
    return data


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str, where: str) -> None:
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_password)
    except TlsError as exc:
        raise TlsError(f"{where}.key_file: {key_file!r}: {exc}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"{where}: cannot use cert_file {cert_file!r} with key_file {key_file!r} "
            f"(expected a PEM certificate and its unencrypted PEM private key): {exc}"
        ) from exc


def _load_ca(context: ssl.SSLContext, ca_file: str, key: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"{key}: cannot use {ca_file!r} (expected PEM CA certificates): {exc}"
        ) from exc


class ServerTls:
    """The receivers' certificate; with ``client_ca_file``, clients must present a certificate
    signed by one of those CAs (mutual TLS)."""

    def __init__(
        self, cert_file: str, key_file: str, client_ca_file: str = "", *, where: str = "tls"
    ) -> None:
        self.mutual = bool(client_ca_file)
        # Not create_default_context(CLIENT_AUTH): that would also trust the system's CAs for
        # client certificates, and mutual TLS must trust client_ca_file alone.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(context, cert_file, key_file, where)
        if client_ca_file:
            _load_ca(context, client_ca_file, f"{where}.client_ca_file")
            context.verify_mode = ssl.CERT_REQUIRED
        self.ssl_context = context
        self._cert_chain = _read(cert_file, f"{where}.cert_file")
        self._private_key = _read(key_file, f"{where}.key_file")
        self._client_ca = _read(client_ca_file, f"{where}.client_ca_file") if self.mutual else None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self._private_key, self._cert_chain)],
            root_certificates=self._client_ca,
            require_client_auth=self.mutual,
        )


class ClientTls:
    """How the exporter verifies the downstream (``ca_file``, else the system's trusted roots)
    and, with ``cert_file`` and ``key_file``, proves who it is (mutual TLS)."""

    def __init__(
        self,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        server_name_override: str = "",
        *,
        where: str = "tls",
    ) -> None:
        if bool(cert_file) != bool(key_file):
            raise TlsError(f"{where}: cert_file and key_file go together: set both or neither")
        self.server_name_override = server_name_override
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_file:  # then only its CAs are trusted, not the system's as well
            _load_ca(context, ca_file, f"{where}.ca_file")
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if cert_file:
            _load_chain(context, cert_file, key_file, where)
        self.ssl_context = context
        self._ca = _read(ca_file, f"{where}.ca_file") if ca_file else None
        self._cert_chain = _read(cert_file, f"{where}.cert_file") if cert_file else None
        self._private_key = _read(key_file, f"{where}.key_file") if key_file else None

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._ca,
            private_key=self._private_key,
            certificate_chain=self._cert_chain,
        )
