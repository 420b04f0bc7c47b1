"""Every MQTT client the collector makes, made in one place: the source adapter, `collector
check`'s topic spy, the capacity feed and the simulator. A ``Broker`` says where and as whom to
connect; ``make_client`` returns a paho 2 client with the callback API, protocol version, client
id, credentials and TLS set, so defaults (the port, TLS checks) are written once."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from adapters.mqtt.config import MqttSource, Tls

log = logging.getLogger(__name__)

PORT, TLS_PORT = 1883, 8883
Protocol = Literal["3.1.1", "5"]
C = TypeVar("C", bound=paho.Client)


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and as whom a client connects."""

    host: str
    port: int | None = None
    """None: 1883, or 8883 with TLS."""
    username: str | None = None
    password: SecretStr | None = None
    tls: Tls | None = None
    protocol: Protocol = "5"

    @classmethod
    def of(cls, source: MqttSource) -> Broker:
        """The broker of an `mqtt` source, as it is configured."""
        return cls(source.host, source.port, source.username, source.password, source.tls, source.protocol)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port or (TLS_PORT if self.tls is not None else PORT)


@overload
def make_client(broker: Broker, client_id: str, what: str, *, factory: type[C], protocol: Protocol | None = None,
                **options: Any) -> C: ...


@overload
def make_client(broker: Broker, client_id: str, what: str, *, protocol: Protocol | None = None,
                **options: Any) -> paho.Client: ...


def make_client(broker: Broker, client_id: str, what: str, *, factory: type[Any] = paho.Client,
                protocol: Protocol | None = None, **options: Any) -> Any:
    """A paho 2 client for ``broker`` (callback API v2; ``protocol`` overrides the broker's).
    ``what`` names the connection in logs; ``options`` go to paho's constructor
    (``clean_session``, ``manual_ack``...); ``factory`` is paho's ``Client`` or a subclass."""
    version = protocol or broker.protocol
    client = factory(CallbackAPIVersion.VERSION2, client_id=client_id,
                     protocol=paho.MQTTv5 if version == "5" else paho.MQTTv311, **options)
    secure(client, broker.username, broker.password, broker.tls, what)
    return client


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
