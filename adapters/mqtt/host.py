"""The Sparkplug Primary Host Application role, sans I/O: the STATE messages and when to send them.

Edge nodes configured with a primary host (Sparkplug 3.0, and many 2.2 ones) publish no birth
until that host says it is online, and end their session when it says it went away: that is
how they know someone records what they send. With ``host_id`` set, a source plays that host:

    host = PrimaryHost("plant-3", "3.0")
    will = host.will(now_ms)     # into the CONNECT: the broker publishes it if we vanish
    birth = host.birth()         # once subscribed: retained, QoS 1
    host.seen(payload)           # a message on our own STATE topic -> what to publish in reply
    death = host.death()         # before a clean DISCONNECT (which discards the will)

Sparkplug 3.0: topic ``spBv1.0/STATE/<host_id>``, payload ``{"online": bool, "timestamp": ms}``.
The will and the birth of one connection carry the same timestamp, the time of its CONNECT: an
edge node ignores a STATE older than the last one it saw, so each connection's birth outdates
the will of the one before, and its own will (or death) ends exactly its own birth.

Sparkplug 2.2: topic ``STATE/<host_id>``, payload ``ONLINE`` / ``OFFLINE``, no timestamp.

Every message is retained, QoS 1. A retained offline on our own topic while we are online (the
will of an earlier connection that the broker published late, a stray test client) would keep
edge nodes waiting: the host publishes its birth again, as the spec asks. An online or offline
of a *newer* connection means a second host uses the same id: that is logged, once, and not
fought over (edge nodes follow the newest stamp).
"""

from __future__ import annotations

import logging
from typing import Literal

import orjson

from adapters.mqtt.commands import Publish

log = logging.getLogger(__name__)

Version = Literal["3.0", "2.2"]


class PrimaryHost:
    """The STATE of one host id on one broker, across the connections of one source."""

    def __init__(self, host_id: str, version: Version = "3.0") -> None:
        self.host_id = host_id
        self.version = version
        self.topic = f"spBv1.0/STATE/{host_id}" if version == "3.0" else f"STATE/{host_id}"
        self.timestamp_ms: int | None = None  # of the current connection's CONNECT
        self.online = False  # our birth is out on the current connection
        self._rival_logged = False

    def will(self, now_ms: int) -> Publish:
        """The will of a new connection, stamped ``now_ms`` (the time of its CONNECT)."""
        self.timestamp_ms = now_ms
        self.online = False
        return self._state(online=False)

    def birth(self) -> Publish:
        """The STATE birth, once the connection is subscribed (the spec's order: subscribe first,
        so that nothing an edge node sends in answer is missed)."""
        self.online = True
        return self._state(online=True)

    def death(self) -> Publish:
        """The offline STATE a clean stop publishes before its DISCONNECT."""
        self.online = False
        return self._state(online=False)

    def seen(self, payload: bytes | bytearray) -> list[Publish]:
        """A message on our own STATE topic (retained or live): the births to publish in reply."""
        if not self.online or self.timestamp_ms is None:
            return []  # not born yet on this connection: the birth is on its way anyway
        online, stamp = self._parse(payload)
        if online is None:
            return []  # an empty payload clears the retained message; garbage is not ours to judge
        if stamp is not None and stamp > self.timestamp_ms:
            self._rival(f"a STATE of a newer connection ({stamp} > {self.timestamp_ms})")
            return []
        if online:
            if stamp is not None and stamp != self.timestamp_ms:
                self._rival(f"an online STATE stamped {stamp}, ours is {self.timestamp_ms}")
            return []
        log.info("Sparkplug host %s: an offline STATE on %s while online (a late will of an earlier "
                 "connection?): publishing the birth again", self.host_id, self.topic)
        return [self._state(online=True)]

    def _state(self, *, online: bool) -> Publish:
        if self.version == "3.0":
            payload = orjson.dumps({"online": online, "timestamp": self.timestamp_ms})
        else:
            payload = b"ONLINE" if online else b"OFFLINE"
        return Publish(self.topic, payload, qos=1, retain=True)

    def _parse(self, payload: bytes | bytearray) -> tuple[bool | None, int | None]:
        text = bytes(payload).strip()
        if text in (b"ONLINE", b"OFFLINE"):  # 2.2, or a 2.2 client on a 3.0 topic
            return text == b"ONLINE", None
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None, None
        if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
            return None, None
        stamp = obj.get("timestamp")
        return obj["online"], stamp if type(stamp) is int else None

    def _rival(self, what: str) -> None:
        if not self._rival_logged:
            self._rival_logged = True
            log.warning("Sparkplug host %s: %s on %s: another client acts as this host (edge nodes follow the "
                        "newest); give each host application its own host_id", self.host_id, what, self.topic)
