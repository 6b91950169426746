"""The security keys: `receivers.tls`, `receivers.auth`, `exporter.tls`. Certificate files are
checked when the config is loaded, against certificates generated here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sampler.cli import main
from sampler.config.model import ClientTlsConfig, ReceiverAuthConfig, ServerTlsConfig
from sampler.config.reader import ConfigError, ConfigProblem
from sampler.config_file import load_config, load_config_text
from tests.certificates import Certificates, make_certificates

RULES = "rules: [{name: all, action: keep}]\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text + RULES, "c.yaml", {})
    return caught.value.problems


def test_security_is_off_by_default() -> None:
    config = load_config_text(RULES, "c.yaml")
    assert config.receivers.tls == ServerTlsConfig()
    assert config.receivers.auth == ReceiverAuthConfig()
    assert config.exporter.tls == ClientTlsConfig()
    assert not config.exporter.tls.configured


def test_mutual_tls_bearer_token_and_exporter_tls_load(certs: Certificates) -> None:
    config = load_config_text(
        f"receivers:\n"
        f"  tls:\n"
        f"    cert_file: {certs.server_cert}\n"
        f"    key_file: {certs.server_key}\n"
        f"    client_ca_file: {certs.ca}\n"
        f"  auth:\n"
        f"    bearer_token: ${{env:INGEST_TOKEN}}\n"
        f"exporter:\n"
        f"  url: grpcs://backend.internal:4317\n"
        f"  tls:\n"
        f"    ca_file: {certs.ca}\n"
        f"    cert_file: {certs.client_cert}\n"
        f"    key_file: {certs.client_key}\n"
        f"    server_name_override: localhost\n" + RULES,
        "c.yaml",
        {"INGEST_TOKEN": "abc-123_XYZ.~+/=="},
    )
    assert config.receivers.tls == ServerTlsConfig(
        str(certs.server_cert), str(certs.server_key), str(certs.ca)
    )
    assert config.receivers.auth.bearer_token == "abc-123_XYZ.~+/=="
    assert config.exporter.tls == ClientTlsConfig(
        str(certs.ca), str(certs.client_cert), str(certs.client_key), "localhost"
    )


@pytest.mark.parametrize(
    ("section", "line", "key", "message"),
    [
        (
            "receivers: {tls: {cert_file: CERT}}",
            1,
            "receivers.tls.cert_file",
            "cert_file needs its key_file: set both or neither",
        ),
        (
            "receivers: {tls: {key_file: KEY}}",
            1,
            "receivers.tls.key_file",
            "key_file needs its cert_file: set both or neither",
        ),
        (
            "receivers: {tls: {client_ca_file: CA}}",
            1,
            "receivers.tls.client_ca_file",
            "mutual TLS needs TLS: set cert_file and key_file too",
        ),
        (
            "exporter:\n  url: https://backend\n  tls:\n    cert_file: CERT",
            4,
            "exporter.tls.cert_file",
            "cert_file needs its key_file: set both or neither",
        ),
        (
            "exporter:\n  url: http://backend:4318\n  tls:\n    ca_file: CA",
            3,
            "exporter.tls",
            "TLS settings need a grpcs:// or https:// url",
        ),
    ],
    ids=[
        "cert-without-key",
        "key-without-cert",
        "mtls-without-tls",
        "client-cert-without-key",
        "tls-with-plaintext-url",
    ],
)
def test_settings_that_only_work_together(
    certs: Certificates, section: str, line: int, key: str, message: str
) -> None:
    text = (
        section.replace("CERT", str(certs.server_cert))
        .replace("KEY", str(certs.server_key))
        .replace("CA", str(certs.ca))
    )
    (problem,) = problems(text + "\n")
    assert (problem.line, problem.key, problem.message) == (line, key, message)


def _encrypted_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"password"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("make", "key", "message"),
    [
        (
            lambda d, c: d / "absent.pem",
            "cert_file",
            "cannot read (No such file or directory); expected a readable PEM certificate file",
        ),
        (lambda d, c: d, "cert_file", "is a directory; expected a readable PEM certificate file"),
        (
            lambda d, c: c.server_key,
            "cert_file",
            "holds no -----BEGIN CERTIFICATE----- block; expected a readable PEM certificate file",
        ),
        (
            lambda d, c: c.server_cert,
            "key_file",
            "holds no -----BEGIN PRIVATE KEY----- block; expected a readable PEM key file",
        ),
        (
            lambda d, c: _encrypted_key(d / "encrypted.key"),
            "key_file",
            "holds an encrypted private key; expected an unencrypted PEM private key",
        ),
    ],
    ids=["missing", "directory", "key-as-cert", "cert-as-key", "encrypted-key"],
)
def test_unusable_files_name_the_key_the_file_and_what_was_expected(
    tmp_path: Path,
    certs: Certificates,
    make: Callable[[Path, Certificates], Path],
    key: str,
    message: str,
) -> None:
    bad = make(tmp_path, certs)
    files = {"cert_file": certs.server_cert, "key_file": certs.server_key, key: bad}
    (problem,) = problems(
        f"receivers:\n  tls:\n    cert_file: {files['cert_file']}\n"
        f"    key_file: {files['key_file']}\n"
    )
    assert problem.key == f"receivers.tls.{key}"
    assert problem.line == (3 if key == "cert_file" else 4)
    assert problem.message == f"{str(bad)!r}: {message}"


def test_check_config_never_prints_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "never-print-me-0123456789"
    monkeypatch.setenv("AGENT_SAMPLER_TEST_TOKEN", token)
    path = tmp_path / "sampler.yaml"
    path.write_text(
        "receivers: {auth: {bearer_token: '${env:AGENT_SAMPLER_TEST_TOKEN}'}}\n"
        f"exporter: {{headers: {{authorization: 'Bearer {token}'}}}}\n" + RULES
    )
    assert load_config(path).receivers.auth.bearer_token == token
    assert main(["check-config", str(path)]) == 0
    monkeypatch.setenv("AGENT_SAMPLER_TEST_TOKEN", token + " broken")
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "receivers.auth.bearer_token" in err
    assert token not in out + err
