"""Credentials and TLS on a paho client: one place for every MQTT client the collector makes
(the source adapter, `collector check`'s topic spy, the capacity feed)."""

from __future__ import annotations

import logging
import ssl

import paho.mqtt.client as paho
from pydantic import SecretStr

from adapters.mqtt.config import Tls

log = logging.getLogger(__name__)


def secure(client: paho.Client, username: str | None, password: SecretStr | None, tls: Tls | None,
           what: str) -> None:
    """Set the user name and password, and TLS (a CA, a client certificate) when configured.
    ``what`` names the connection in the warning an insecure TLS setting earns at every connect."""
    if username is not None:
        client.username_pw_set(username, password.get_secret_value() if password else None)
    if tls is None:
        return
    client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                   certfile=str(tls.cert_file) if tls.cert_file else None,
                   keyfile=str(tls.key_file) if tls.key_file else None,
                   cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED)
    if tls.insecure:
        log.warning("%s: TLS certificate and host name checks are OFF (tls.insecure): anyone on the path can "
                    "read and forge this connection", what)
        client.tls_insecure_set(True)
