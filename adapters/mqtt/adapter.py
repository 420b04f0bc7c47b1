"""The MQTT adapter: a paho-mqtt client driven by the asyncio loop, messages -> events.

    async with MqttAdapter(source, machines, context) as adapter:   # connected and subscribed
        async for event in adapter:                                  # Reading | Connectivity | ...
            ...

paho's network loop runs on the event loop's selector (the socket callbacks below, as aiomqtt
does it), not in a thread of its own: one thread, no lock hand-offs per message. On a readable
socket, packets are read in a burst; each PUBLISH goes through ``_on_publish`` (route by topic,
cached; decode; build events) into a deque the async iterator drains. When the deque is full
the socket is no longer read: TCP pushes back and the broker keeps the messages (QoS 1, a
persistent session), so memory stays bounded whatever the backlog.

The adapter does not reconnect: when the connection is lost, the iterator raises
``SourceError`` once it has handed over what was already received, and the engine's supervisor
connects again. With a persistent session (the default) the broker queues QoS 1 messages in
the meantime and delivers them on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self, cast

import paho.mqtt.client as paho
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from adapters.base import AdapterContext, Batch, BoundMachine, SourceConfig, SourceError, horizon
from adapters.mqtt._lean_properties import install as install_lean_properties
from adapters.mqtt.client import Broker, make_client
from adapters.mqtt.commands import Publish
from adapters.mqtt.config import MqttSource
from adapters.mqtt.decoder import MqttDecoder
from collector.core.model import Event, now_ns

log = logging.getLogger(__name__)
install_lean_properties()

HIGH_WATER = 5_000
"""Events buffered before the socket is no longer read (backpressure to the broker)."""
LOW_WATER = 1_000
READ_BURST = 256
"""Packets read per readable-socket callback before the loop gets its turn again."""
RECV_CHUNK = 65_536
RECEIVE_MAXIMUM = HIGH_WATER
CATCHUP_IDLE_S = 2.0
"""After a reconnect to a kept session: this long without a message and the backlog is read.
(Stamps cannot tell: a broker queues each publisher's messages in turn, so a recent stamp can
come before an hour-old one of another machine.)"""
CATCHUP_MAX_S = 120.0
"""A plant that never pauses for CATCHUP_IDLE_S: the wall clock takes over after this long."""


_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id (v3.1.1 and v5: reason 0 implied)


class _Client(paho.Client):
    """paho with buffered socket reads, a direct path for PUBLISH and PUBACKs in one write.

    paho reads every packet with at least three ``recv`` calls (the command byte, the length,
    the body), one system call each. Here the socket is read in 64 KiB chunks and paho is
    served from that buffer, so draining a backlog costs one system call per few hundred
    messages instead of three per message. ``_sock_recv`` is paho's one read path (TLS
    included); its contract (bytes, ``b""`` at EOF, ``BlockingIOError`` when nothing is
    there) is kept. A new client is made for every connection, so no buffer outlives one.

    ``on_publish_packet(topic, payload, qos, mid)``: QoS 0 and 1 PUBLISH packets go straight
    to it, past paho's ``MQTTMessage``, its debug log line and its matcher of
    ``message_callback_add`` filters (none here): about a tenth of a drain's time. QoS 2 keeps
    paho's path (its PUBREC/PUBREL state). With ``manual_ack``, QoS 1 is acknowledged by
    ``ack_all``, as paho's own path would leave it.
    """

    _rbuf: bytes = b""
    _rpos: int = 0
    socket_reads = 0
    redelivered = 0  # PUBLISH packets with the DUP flag, since the adapter last took the count
    on_publish_packet: Callable[[bytes, bytes, int, int], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        deliver, packet = self.on_publish_packet, self._in_packet
        if deliver is None or packet["command"] & 0x06 not in (0x00, 0x02):  # QoS 2 (and a malformed 3)
            return super()._handle_publish()
        if packet["command"] & 0x08:  # DUP: the broker sent this message before (a redelivery)
            self.redelivered += 1
        result = paho_packet.decode_publish(packet["command"], packet["packet"], self._protocol)
        deliver(result.topic, cast(bytes, result.payload), result.qos, result.mid)  # struct.unpack gives bytes
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_all(self, unacked: Sequence[tuple[int, int]]) -> None:
        """Acknowledge ``(mid, qos)`` in order: QoS 1 alone as one write of all the PUBACKs (one
        queued packet, one wake-up and one send instead of one each per message)."""
        if all(qos == 1 for _, qos in unacked):
            pack = _PUBACK.pack
            self._packet_queue(paho.PUBACK, b"".join([pack(paho.PUBACK, 2, mid) for mid, _ in unacked]), 0, 0)
            return
        for mid, qos in unacked:
            self.ack(mid, qos)

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(RECV_CHUNK)  # raises BlockingIOError when nothing is there
            self.socket_reads += 1
            if not buf:
                return buf  # EOF: paho sees the connection lost
            pos = 0
        end = pos + bufsize
        self._rbuf, self._rpos = buf, end
        return buf[pos:end] if pos or end < len(buf) else buf

    @property
    def buffered(self) -> int:
        """Bytes read from the socket that paho has not consumed yet."""
        return max(0, len(self._rbuf) - self._rpos)


class MqttAdapter:
    def __init__(self, config: SourceConfig, machines: Sequence[BoundMachine], context: AdapterContext) -> None:
        assert isinstance(config, MqttSource)
        self.config = config
        self.source_id = config.id
        self.context = context
        self.decoder = MqttDecoder(config, machines, context.bad_input)
        self.events: deque[Event] = deque()
        self._client: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._sock: Any = None
        self._reading = False
        self._writing = False
        self._paused = False
        self._lost: str | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[tuple[bool, int, str]] | None = None
        self._suback: asyncio.Future[list[int]] | None = None
        self._misc: asyncio.Task[None] | None = None
        self.received = 0
        self.high_water, self.low_water = HIGH_WATER, LOW_WATER
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) of messages read, in order
        self._catching_up = False
        self._connected_mono = 0.0
        self._received_at_connect = 0
        self._outstanding = 0  # batches handed over whose acknowledgements are not sent yet
        self._quiet_since: float | None = None  # everything read is handed over and acknowledged

    # -- public ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = self._client = self._make_client()
        _, port = Broker.of(cfg).address
        self._connack = self._loop.create_future()
        properties = None
        clean_start: Any = paho.MQTT_CLEAN_START_FIRST_ONLY
        if cfg.protocol == "5":
            clean_start = cfg.clean_start
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0 if cfg.clean_start else int(cfg.session_expiry)
            # Messages in flight (read, not yet committed and acknowledged) the broker may send:
            # enough for a whole batch, so acknowledging after the commit does not stall a drain.
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        host = self.decoder.host
        if host is not None:
            # The will marks the host offline if the connection dies without a DISCONNECT; it is
            # stamped with this connect's time, and so will be the birth (the spec's pairing).
            will = host.will(time.time_ns() // 1_000_000)
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation that
            # arrives as the connect completes, and a stopping collector would never stop.
            async with asyncio.timeout(cfg.connect_timeout):
                # connect() resolves, opens the socket and does the TLS handshake: blocking, so off the loop.
                await asyncio.to_thread(client.connect, cfg.host, port, int(cfg.keepalive), clean_start=clean_start,
                                        properties=properties)
            async with asyncio.timeout(cfg.connect_timeout):
                session_present, code, reason = await self._connack
        except (OSError, ValueError) as exc:  # ConnectionError, TimeoutError and ssl.SSLError are OSErrors
            self._close()
            raise SourceError(f"cannot connect to mqtt://{cfg.host}:{port}: {exc or type(exc).__name__}") from exc
        except BaseException:  # cancelled while connecting: leave no socket behind
            self._close()
            raise
        if code != 0:
            self._close()
            raise SourceError(f"broker {cfg.host}:{port} refused the connection: {reason}")
        log.info("source %s: connected to %s:%s as %s (MQTT %s, session %s)", self.source_id, cfg.host, port,
                 self.client_id, cfg.protocol, "resumed" if session_present else "new")
        # A kept session may hold a backlog: until it is read, time moves only on its stamps.
        self._catching_up = session_present and cfg.redelivers()
        self._connected_mono = time.monotonic()
        self._quiet_since = None
        self._received_at_connect = self.received
        try:
            await self._subscribe()
        except BaseException:
            self._close()
            raise
        if host is not None:
            # Subscribed first (the spec's order): whatever an edge node sends once it sees the birth is read.
            self._publish(host.birth())
            log.info("source %s: Sparkplug primary host %r online on %s (STATE timestamp %s)", self.source_id,
                     host.host_id, host.topic, host.timestamp_ms)
        self._misc = asyncio.create_task(self._keepalive(), name=f"mqtt-keepalive:{self.source_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        if self._client is not None and self._lost is None:
            # A clean DISCONNECT: the broker keeps the session (and does not publish our will).
            self._lost = "closed"
            with contextlib.suppress(Exception):
                if self.decoder.host is not None and self.decoder.host.online:
                    # A clean DISCONNECT discards the will: say offline first (queued before it, in order).
                    self._publish(self.decoder.host.death())
                self._client.disconnect()
                self._client.loop_write()
        self._close()

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._iterate()

    @property
    def client_id(self) -> str:
        return self.config.client_id or f"collector-{self.source_id}"

    # -- the per-message path --------------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        """paho's path (QoS 2)."""
        if msg.dup and self._client is not None:
            self._client.redelivered += 1
        self._on_publish(msg._topic, cast(bytes, msg.payload), msg.qos, msg.mid)

    def _on_publish(self, topic_bytes: bytes, payload: bytes, qos: int, mid: int) -> None:
        self.received += 1
        if qos:  # acknowledged after the commit that holds its effect, bad input included
            self._unacked.append((mid, qos))
        self._quiet_since = None
        try:
            topic = topic_bytes.decode()
        except UnicodeDecodeError:
            self.decoder.report("bad_topic", "a topic that is not UTF-8")
            return
        self._feed(topic, payload)

    def _feed(self, topic: str, payload: bytes) -> None:
        """One message's meaning: the decoder's events and the commands it returns (a subclass
        that reads another protocol over MQTT decodes here instead)."""
        events, commands = self.decoder.feed(topic, payload, now_ns())
        if events:
            self.events.extend(events)
        if commands:
            self._publish(*commands)

    def _publish(self, *commands: Publish) -> None:
        if self._client is not None:
            for command in commands:
                self._client.publish(command.topic, command.payload, qos=command.qos, retain=command.retain)

    async def _iterate(self) -> AsyncIterator[Batch]:
        assert self._loop is not None
        events = self.events
        while True:
            if events or self._unacked:
                batch, self.events = list(events), deque()
                events = self.events
                unacked, self._unacked = self._unacked, []
                if self._paused:
                    self._resume()
                if unacked:
                    self._outstanding += 1
                client = self._client
                redelivered = 0
                if client is not None:
                    redelivered, client.redelivered = client.redelivered, 0
                yield Batch(batch, self._acker(unacked) if unacked else None, len(unacked), redelivered)
                continue
            if self._lost is not None:
                raise SourceError(self._lost)
            self._quiet()
            self._wakeup = self._loop.create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None

    def _acker(self, unacked: list[tuple[int, int]]) -> Callable[[], None]:
        client = self._client

        def ack() -> None:
            # PUBACKs once the batch is committed, in the order the messages came (MQTT asks
            # for that order). After a reconnect they belong to a connection that is gone: the
            # broker delivers those messages again, and the trackers skip what they already have.
            if client is not None and client is self._client:
                client.ack_all(unacked)
                self._outstanding -= 1
                self._quiet()
        return ack

    def _quiet(self) -> None:
        """Start the quiet clock once all that was read is handed over and acknowledged: from
        then on, the broker has nothing in flight for us that it is waiting to send."""
        if self._quiet_since is None and not self.events and not self._unacked and not self._outstanding:
            self._quiet_since = time.monotonic()

    def horizon_ns(self) -> int | None:
        return horizon(self.events)

    def catching_up(self) -> bool:
        if self._catching_up:
            now = time.monotonic()
            quiet = self._quiet_since
            # Quiet means idle while able to read: not paused, nothing waiting for our commit or
            # our acknowledgement (a broker holds back past Receive Maximum), and nothing unread
            # in the socket right now (a long batch may have kept the loop from reading it).
            if quiet is not None and now - quiet >= CATCHUP_IDLE_S and not self._readable_now():
                self._caught_up(f"nothing more for {CATCHUP_IDLE_S:g}s")
            elif now - self._connected_mono >= CATCHUP_MAX_S:
                self._caught_up(f"still receiving after {CATCHUP_MAX_S:g}s")
        return self._catching_up

    def _readable_now(self) -> bool:
        sock = self._sock
        if self._buffered():
            return True
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _caught_up(self, why: str) -> None:
        self._catching_up = False
        log.info("source %s: caught up with what the broker kept (%s, %d message(s) since connect)",
                 self.source_id, why, self.received - self._received_at_connect)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- routing (once per topic) ----------------------------------------------------------

    # -- connection ------------------------------------------------------------------------

    def _make_client(self) -> _Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = make_client(Broker.of(cfg), self.client_id, f"source {self.source_id}", factory=_Client,
                             clean_session=None if v5 else cfg.clean_start, reconnect_on_failure=False,
                             manual_ack=True)
        client.connect_timeout = cfg.connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish_packet = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    async def _subscribe(self) -> None:
        assert self._client is not None and self._loop is not None
        cfg = self.config
        filters = self.decoder.filters()
        self._suback = self._loop.create_future()
        if cfg.protocol == "5":
            result, _ = self._client.subscribe([(f, SubscribeOptions(qos=cfg.qos)) for f in filters])
        else:
            result, _ = self._client.subscribe([(f, int(cfg.qos)) for f in filters])
        if result != paho.MQTT_ERR_SUCCESS:
            raise SourceError(f"subscribe failed: {paho.error_string(result)}")
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                codes = await self._suback
        except OSError as exc:
            raise SourceError(f"the broker did not acknowledge the subscriptions: {exc}") from exc
        refused = [f for f, code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            raise SourceError(f"the broker refused the subscription(s) {', '.join(refused)}")
        log.info("source %s: subscribed to %s", self.source_id, ", ".join(filters))

    async def _keepalive(self) -> None:
        assert self._client is not None
        # paho's periodic duty (send PINGREQ, notice a silent broker): once a second, as its own loop does.
        while True:
            await asyncio.sleep(1.0)
            if self._client is None or self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                break
        self._set_lost("connection lost (keepalive)")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((bool(flags.session_present), int(reason.value), str(reason)))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[Any], properties: Any) -> None:
        if self._suback is not None and not self._suback.done():
            self._suback.set_result([int(c.value) for c in codes])

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._set_lost(f"disconnected from {self.config.host}: {reason}")

    def _set_lost(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            log.warning("source %s: %s", self.source_id, why)
        for pending in (self._connack, self._suback):  # lost while connecting: fail now, not at the timeout
            if pending is not None and not pending.done():
                pending.set_exception(ConnectionError(why))
        self._wake()

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop: paho calls the socket callbacks from the connect thread too."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self._call(self._start_reading)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def stop() -> None:
            self._stop_io(sock)
            self._set_lost(self._lost or "connection closed")
        self._call(stop)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if not self._writing:
            self._call(lambda: self._start_writing(sock))

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._writing:
            self._call(lambda: self._stop_writing(sock))

    def _start_reading(self) -> None:
        if self._loop is not None and self._sock is not None and not self._reading and not self._paused:
            self._loop.add_reader(self._sock, self._readable)
            self._reading = True

    def _start_writing(self, sock: Any) -> None:
        if self._loop is not None and not self._writing and sock.fileno() >= 0:
            self._loop.add_writer(sock, self._writable)
            self._writing = True

    def _stop_writing(self, sock: Any) -> None:
        if self._loop is not None and self._writing:
            self._loop.remove_writer(sock)
            self._writing = False

    def _stop_io(self, sock: Any) -> None:
        if self._loop is None:
            return
        if self._reading:
            self._loop.remove_reader(sock)
            self._reading = False
        self._stop_writing(sock)
        self._sock = None

    def _readable(self) -> None:
        client = self._client
        if client is None:  # a resume scheduled just before the adapter closed
            return
        events = self.events
        before = len(events)
        try:
            for _ in range(READ_BURST):
                received = self.received
                rc = client.loop_read()
                if rc != paho.MQTT_ERR_SUCCESS:
                    self._set_lost(f"read failed: {paho.error_string(rc)}")
                    break
                if self.received == received and not self._buffered():
                    break
                # Not before __aenter__ is done: the SUBACK may be queued behind a session's backlog.
                if len(events) >= self.high_water and self._misc is not None:
                    self._pause()
                    break
            else:
                # The burst is used up with bytes already read into memory: the selector will
                # not report those, so come back after the loop's other work has had its turn.
                if self._buffered() and self._loop is not None:
                    self._loop.call_soon(self._readable)
        except Exception as exc:  # a broken socket shows up here as OSError or ssl errors
            self._set_lost(f"read failed: {exc}")
        if len(events) != before:
            self._wake()

    def _buffered(self) -> bool:
        """Whether bytes wait that select() cannot see: in our read buffer, or decrypted by TLS."""
        client, sock = self._client, self._sock
        if client is not None and client.buffered:
            return True
        return sock is not None and hasattr(sock, "pending") and bool(sock.pending())

    def _writable(self) -> None:
        assert self._client is not None
        try:
            rc = self._client.loop_write()
        except Exception as exc:
            self._set_lost(f"write failed: {exc}")
            return
        if rc != paho.MQTT_ERR_SUCCESS:
            self._set_lost(f"write failed: {paho.error_string(rc)}")

    def _pause(self) -> None:
        if self._reading and self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._reading = False
        self._paused = True

    def _resume(self) -> None:
        self._paused = False
        self._start_reading()
        if self._reading and self._loop is not None:
            self._loop.call_soon(self._readable)  # bytes may already wait in the socket

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        sock = self._sock
        if sock is not None:
            self._stop_io(sock)
        client.on_socket_close = None
        client.on_disconnect = None
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                sock.close()
