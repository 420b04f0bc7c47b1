"""Client certificate, server trust list and user token for one OPC UA source.

Layout in the source's data dir (the same as UaExpert's and open62541's, so admins know it):

    pki/own/cert.der, pki/own/key.pem   the client's self-signed certificate (made on first run)
    pki/trusted/                        server certificates trusted (copy them here)
    pki/rejected/                       server certificates refused (move one to trusted/ to trust it)
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from asyncua.crypto.truststore import TrustStore
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from adapters.base import SourceError
from adapters.opcua.config import OpcUaSource

log = logging.getLogger(__name__)

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_DER = Encoding.DER
MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


class UntrustedServerCertificate(SourceError):
    """The server presented a certificate that is not in the trust list."""


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 thumbprint as OPC UA tools (UaExpert, server admin pages) show it."""
    return cert.fingerprint(hashes.SHA1()).hex()  # the OPC UA thumbprint is SHA-1 by definition


def application_uri(config: OpcUaSource) -> str:
    return config.application_uri or f"urn:{socket.gethostname()}:availability-collector"


async def client_certificate(client: Client, config: OpcUaSource, data_dir: Path) -> tuple[Path, Path]:
    """The configured certificate and key, or a self-signed pair made once in the data dir."""
    if config.certificate is not None and config.private_key is not None:
        return config.certificate, config.private_key
    own = data_dir / "pki" / "own"
    cert_file, key_file = own / "cert.der", own / "key.pem"
    existed = cert_file.is_file()
    await client.setup_self_signed_certificate(key_file, cert_file)
    cert = x509.load_der_x509_certificate(cert_file.read_bytes())
    log.info("%s client certificate %s (thumbprint %s, application URI %s): the server admin must trust it",
             "using" if existed else "generated", cert_file, thumbprint(cert), client.application_uri)
    return cert_file, key_file


def _load_any(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def trusted_certificates(config: OpcUaSource, data_dir: Path) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for location in [data_dir / "pki" / "trusted", *config.trusted_server_certificates]:
        files = sorted(p for p in location.iterdir() if p.is_file()) if location.is_dir() else [location]
        for f in files:
            if not f.exists():
                log.warning("trusted server certificate %s does not exist", f)
                continue
            try:
                certs.extend(_load_any(f))
            except ValueError as exc:
                log.warning("cannot read trusted certificate %s: %s", f, exc)
    return certs


async def check_server_certificate(cert: x509.Certificate, config: OpcUaSource, data_dir: Path) -> None:
    """Accept a server certificate that is in the trust list (or issued by a CA in it);
    otherwise save it to ``pki/rejected/`` and raise with what the admin can do."""
    if config.trust_any_server:
        return
    trusted = trusted_certificates(config, data_dir)
    if any(c.fingerprint(hashes.SHA256()) == cert.fingerprint(hashes.SHA256()) for c in trusted):
        return
    cas = [c for c in trusted if _is_ca(c)]
    if cas:
        store = TrustStore([], [])
        store._trust_store = x509.verification.Store(cas)  # the CAs we already loaded, no second file walk
        if store.is_trusted(cert):
            return
    rejected = data_dir / "pki" / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    saved = rejected / f"{thumbprint(cert)}.der"
    saved.write_bytes(cert.public_bytes(_DER))
    subject = cert.subject.rfc4514_string()
    raise UntrustedServerCertificate(
        f"server certificate of {config.endpoint} is not trusted (subject {subject}, thumbprint "
        f"{thumbprint(cert)}); it was saved to {saved}: to trust it, move it to {data_dir / 'pki' / 'trusted'} "
        f"or list it in `trusted_server_certificates`")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


async def apply(client: Client, config: OpcUaSource, data_dir: Path) -> None:
    """Set the client's identity, security policy and user token before it connects."""
    client.application_uri = application_uri(config)
    client.name = client.description = "machine availability collector"
    if config.username is not None:
        client.set_user(config.username)
    if config.password is not None:
        client.set_password(config.password.get_secret_value())
    if config.security_policy == "None":
        if config.password is not None:
            log.warning("source %s sends its password with security policy None: the server may refuse it, "
                        "and anyone on the network can read it", config.id)
        return
    policy = POLICIES[config.security_policy]
    mode = MODES[config.security_mode]
    cert_file, key_file = await client_certificate(client, config, data_dir)
    endpoints = await client.connect_and_get_server_endpoints()
    matching = [e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy.URI]
    if not matching:
        offered = ", ".join(sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}"
                                    for e in endpoints}))
        raise SourceError(f"{config.endpoint} offers no endpoint with {config.security_policy}/"
                          f"{config.security_mode} (it offers: {offered})")
    server_der = matching[0].ServerCertificate
    server_cert = uacrypto.x509_from_der(server_der)
    await check_server_certificate(server_cert, config, data_dir)
    password = config.private_key_password.get_secret_value() if config.private_key_password else None
    await client.set_security(policy, str(cert_file), str(key_file), password,
                              uacrypto.CertProperties(server_cert.public_bytes(_DER), "der"), mode)
