"""Signed and encrypted sessions with user tokens, certificates made by the test, the trust list."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from adapters.base import SourceError
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.security import UntrustedServerCertificate, thumbprint
from tests.fixtures.opcua import OpcUaTestServer, Security, make_certificate, plain_cnc
from tests.opcua_helpers import CNC, Reader, bound, context, source

USERS = {"operator": "s3cret"}
POLICIES = [ua.SecurityPolicyType.Basic256Sha256_Sign, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt, ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign]
MACHINE = [bound("cnc-01", execution=f"nsu={CNC};s=CNC01.Execution")]


@pytest.fixture
def server_security(tmp_path: Path) -> Security:
    cert, key = make_certificate(tmp_path / "server-pki", "server", "urn:test:server", server=True)
    return Security(cert=cert, key=key, policies=POLICIES, users=USERS)


async def start(srv: OpcUaTestServer, security: Security) -> None:
    await srv.start([CNC], plain_cnc(CNC, ["CNC01"]), security)


@pytest.mark.parametrize(("policy", "mode"), [
    ("Basic256Sha256", "Sign"), ("Basic256Sha256", "SignAndEncrypt"),
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"), ("Aes256_Sha256_RsaPss", "Sign")])
async def test_secure_session_with_user_and_test_made_client_certificate(
        opcua_server: OpcUaTestServer, server_security: Security, tmp_path: Path, policy: str, mode: str) -> None:
    """Test that Sign and SignAndEncrypt sessions with a user and test-made certificates read values."""
    await start(opcua_server, server_security)
    client_uri = "urn:test:collector"
    cert, key = make_certificate(tmp_path / "client-pki", "client", client_uri, server=False)
    cfg = source(opcua_server.url, security_policy=policy, security_mode=mode, certificate=cert,
                 private_key=key, application_uri=client_uri, username="operator", password="s3cret",
                 trusted_server_certificates=[server_security.cert])
    async with OpcUaAdapter(cfg, MACHINE, context(tmp_path)) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="a value over the secure channel")
        assert reader.readings()[0].value == "READY"
        assert adapter._client is not None
        assert adapter._client.security_policy.Mode == getattr(ua.MessageSecurityMode, mode)
        await reader.stop()


async def test_client_certificate_generated_once_and_logged(opcua_server: OpcUaTestServer, server_security: Security,
                                                            tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test that a missing client certificate is generated in the data dir once, logged with its thumbprint, reused."""
    await start(opcua_server, server_security)
    ctx = context(tmp_path)
    (ctx.data_dir / "pki" / "trusted").mkdir(parents=True)
    shutil.copy(server_security.cert, ctx.data_dir / "pki" / "trusted" / "server.der")  # trusted via the folder
    cfg = source(opcua_server.url, security_policy="Basic256Sha256", username="operator", password="s3cret")
    caplog.set_level(logging.INFO, logger="adapters.opcua.security")
    async with OpcUaAdapter(cfg, MACHINE, ctx) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="a value")
        await reader.stop()
    cert_file = ctx.data_dir / "pki" / "own" / "cert.der"
    cert = x509.load_der_x509_certificate(cert_file.read_bytes())
    generated = [r.getMessage() for r in caplog.records if "generated client certificate" in r.getMessage()]
    assert len(generated) == 1 and str(cert_file) in generated[0] and thumbprint(cert) in generated[0]
    caplog.clear()
    async with OpcUaAdapter(cfg, MACHINE, ctx):
        pass
    assert cert_file.read_bytes() == cert.public_bytes(Encoding.DER)  # reused, not remade
    assert any("using client certificate" in r.getMessage() for r in caplog.records)


async def test_unknown_server_certificate_is_refused_then_trusted(opcua_server: OpcUaTestServer,
                                                                  server_security: Security, tmp_path: Path) -> None:
    """Test that an untrusted server certificate is refused clearly, saved, and accepted once moved to trusted/."""
    await start(opcua_server, server_security)
    ctx = context(tmp_path)
    cfg = source(opcua_server.url, security_policy="Basic256Sha256", username="operator", password="s3cret")
    with pytest.raises(UntrustedServerCertificate) as err:
        async with OpcUaAdapter(cfg, MACHINE, ctx):
            pass
    server_cert = x509.load_der_x509_certificate(server_security.cert.read_bytes())
    rejected = ctx.data_dir / "pki" / "rejected" / f"{thumbprint(server_cert)}.der"
    message = str(err.value)
    assert f"server certificate of {opcua_server.url} is not trusted" in message
    assert thumbprint(server_cert) in message and str(rejected) in message and "CN=urn:test:server" in message
    assert rejected.read_bytes() == server_security.cert.read_bytes()
    (ctx.data_dir / "pki" / "trusted").mkdir(parents=True)
    rejected.rename(ctx.data_dir / "pki" / "trusted" / rejected.name)
    async with OpcUaAdapter(cfg, MACHINE, ctx) as adapter:
        reader = Reader(adapter)
        await reader.wait(lambda: bool(reader.readings()), what="a value once trusted")
        await reader.stop()


@pytest.mark.parametrize(("policy", "password", "error"), [
    ("Basic256Sha256", "wrong", r"BadUserAccessDenied|BadIdentityTokenRejected|BadIdentityTokenInvalid"),
    ("Aes256_Sha256_RsaPss", "s3cret", r"no endpoint with Aes256_Sha256_RsaPss/SignAndEncrypt.*Basic256Sha256/Sign"),
], ids=["wrong password", "policy not offered"])
async def test_refused_session_says_why(opcua_server: OpcUaTestServer, server_security: Security, tmp_path: Path,
                                        policy: str, password: str, error: str) -> None:
    """Test that a wrong password, or a policy the server does not offer, fails the open saying why."""
    await start(opcua_server, server_security)
    cfg = source(opcua_server.url, security_policy=policy, username="operator", password=password,
                 trusted_server_certificates=[server_security.cert])
    with pytest.raises(SourceError, match=error):
        async with OpcUaAdapter(cfg, MACHINE, context(tmp_path)):
            pass
