"""sampler.tls: TLS files are validated when loaded, and a failure names the key and the file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sampler.tls import ClientTls, ServerTls, TlsError
from tests.certificates import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_server_tls_without_client_ca_does_not_ask_for_client_certificates(
    certs: Certificates,
) -> None:
    tls = ServerTls(str(certs.server_cert), str(certs.server_key))
    assert not tls.mutual
    assert tls.ssl_context.verify_mode is ssl.CERT_NONE
    assert tls.ssl_context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_mutual_tls_trusts_the_client_ca_alone(certs: Certificates) -> None:
    tls = ServerTls(str(certs.server_cert), str(certs.server_key), str(certs.ca))
    assert tls.mutual
    assert tls.ssl_context.verify_mode is ssl.CERT_REQUIRED
    # Only the configured CA, not the system's roots, may vouch for a client.
    assert len(tls.ssl_context.get_ca_certs()) == 1


def test_a_key_that_does_not_match_its_certificate_names_both_files(certs: Certificates) -> None:
    with pytest.raises(TlsError) as caught:
        ServerTls(str(certs.server_cert), str(certs.client_key), where="receivers.tls")
    message = str(caught.value)
    assert message.startswith("receivers.tls: cannot use cert_file")
    assert str(certs.server_cert) in message and str(certs.client_key) in message


def test_an_encrypted_key_is_refused_without_prompting(tmp_path: Path, certs: Certificates) -> None:
    key = tmp_path / "encrypted.key"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(TlsError, match="encrypted private keys are not supported"):
        ServerTls(str(certs.server_cert), str(key), where="receivers.tls")


@pytest.mark.parametrize(
    ("field", "message"),
    [("ca_file", "exporter.tls.ca_file: cannot use"), ("client_ca_file", "rx.client_ca_file")],
    ids=["client-ca-file", "server-client-ca-file"],
)
def test_a_ca_file_without_certificates_is_refused(
    tmp_path: Path, certs: Certificates, field: str, message: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match=message.replace(".", r"\.")):
        if field == "ca_file":
            ClientTls(ca_file=str(junk), where="exporter.tls")
        else:
            ServerTls(str(certs.server_cert), str(certs.server_key), str(junk), where="rx")


def test_client_tls_defaults_to_the_system_roots() -> None:
    tls = ClientTls()
    assert tls.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert tls.ssl_context.check_hostname


def test_client_certificate_needs_its_key(certs: Certificates) -> None:
    with pytest.raises(TlsError, match="cert_file and key_file go together"):
        ClientTls(str(certs.ca), cert_file=str(certs.client_cert))
