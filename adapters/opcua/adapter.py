"""The OPC UA adapter: one session per source, subscriptions (never polling), Readings out.

    async with OpcUaAdapter(source, machines, context) as adapter:   # connect, resolve, subscribe
        async for event in adapter:                                 # MachineFound | Reading
            ...

Opening resolves every configured node address against the live server (namespace URIs are
looked up again on every open, so a server that registered its namespaces in another order
after a restart is read from the right nodes), reads each node once to prove it exists (an
unknown node fails the open with the machine, signal and address named), then creates the
monitored items, split across subscriptions of ``max_items_per_subscription``.

The session is watched by the adapter: it requires a publish response (data or keep-alive,
which the server sends at least every ``keepalive``) within three periods; asyncua reports a
closed connection at once and probes the server only every half session timeout. Either
raises ``SourceError`` out of the iterator; the engine marks the machines offline and opens
the adapter again. asyncua's own reconnect and subscription recreation are off: one owner for
retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription

from adapters.base import AdapterContext, Batch, BoundMachine, SourceConfig, SourceError
from adapters.opcua import addressing, discovery, security
from adapters.opcua.composite import Composites, part_of
from adapters.opcua.config import OpcUaSource
from adapters.opcua.values import plain, quality, to_ns
from collector.core.model import Event, MachineFound, Quality, Reading, now_ns

log = logging.getLogger(__name__)

CHUNK = 500  # nodes per Read / CreateMonitoredItems call: below common server operation limits
NOTIFICATION_QUEUE = 100_000  # per subscription; overflowing it fails the source rather than drop changes
LOST_AFTER_KEEPALIVES = 3


class UnknownNodes(SourceError):
    """Configured addresses that name no node on the server."""


@dataclass(slots=True)
class _Item:
    """One monitored node and the (machine, signal) pairs it feeds."""

    node: ua.NodeId
    address: str
    targets: list[tuple[str, str]] = field(default_factory=list)
    numeric: bool = False
    seen: bool = False


class OpcUaAdapter:
    def __init__(self, config: SourceConfig, machines: Sequence[BoundMachine], context: AdapterContext) -> None:
        if not isinstance(config, OpcUaSource):
            raise TypeError(f"OpcUaAdapter needs an OpcUaSource, got {type(config).__name__}")
        self.config = config
        self.machines = list(machines)
        self.context = context
        self._client: Client | None = None
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._horizon: int | None = None  # the oldest stamp in the queue (the engine's watermark)
        self._items: dict[int, _Item] = {}  # client handle -> item
        self._by_node: dict[ua.NodeId, _Item] = {}
        self._subs: list[Subscription] = []
        self._sub_room: int = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._namespaces: list[str] = []
        self._known: set[str] = {m.id for m in machines}
        self._signals: dict[str, dict[str, str]] = {m.id: dict(m.signals) for m in machines}
        self._opened_ns = 0
        self._opened_mono = 0.0
        self._failed = False
        self._last_ts: dict[str, int] = {}  # machine -> latest timestamp emitted for it
        self._read_chunk = self._items_chunk = CHUNK
        self._composites = Composites()
        self._untrackable: set[str] = set()
        self._discovery: discovery.Discovery | None = None  # per session: rescans look for what is new

    # -- the adapter surface ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        cfg = self.config
        self._opened_ns, self._opened_mono = now_ns(), time.monotonic()
        # Liveness is the publish watch's (_watch). asyncua's probe (a Read each period that must
        # answer within one) and its recreation of a subscription late by 1.5 keep-alives ended
        # healthy sessions of a busy gateway, and cost every session a Read per period and two
        # wake-ups a second: the probe runs as a backstop only, the recreation not at all (_quiet).
        client = Client(cfg.endpoint, timeout=cfg.timeout,
                        watchdog_intervall=max(cfg.keepalive, cfg.session_timeout / 2))
        client.session_timeout = int(cfg.session_timeout * 1000)
        client.connection_lost_callback = self._connection_lost
        try:
            # A server that accepts the connection but never answers must not hang the open.
            async with asyncio.timeout(cfg.timeout * 2):
                await security.apply(client, cfg, self.context.data_dir)
                await client.connect()
            _quiet(client)
        except SourceError:
            raise
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            raise SourceError(f"cannot connect to {cfg.endpoint}: no answer within {cfg.timeout * 2:g}s") from exc
        except Exception as exc:
            raise SourceError(f"cannot connect to {cfg.endpoint}: {_describe(exc)}") from exc
        self._client = client
        try:
            await self._open(client)
        except SourceError:
            await self._close()
            raise
        except Exception as exc:  # a browse or read the server refused: same contract as a lost source
            await self._close()
            raise SourceError(f"opening {cfg.endpoint} failed: {_describe(exc)}") from exc
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._events()

    def horizon_ns(self) -> int | None:
        return self._horizon

    def catching_up(self) -> bool:
        return False  # a server sends current values, never a backlog

    async def _events(self) -> AsyncIterator[Batch]:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._horizon = None
            events: list[Event] = []
            for item in _chronological(batch):
                if isinstance(item, BaseException):
                    if events:
                        yield Batch(events)
                    raise item
                if isinstance(item, Reading):
                    item = self._not_older(item)
                events.append(item)
            yield Batch(events)

    def _not_older(self, reading: Reading) -> Reading:
        """A reading is never older than the one its machine reported before: a server clock
        behind ours (after a reconnect, the first values are stamped with our clock) or items
        sampled apart would otherwise make the tracker drop the change as out of order."""
        last = self._last_ts.get(reading.machine, 0)
        if reading.ts_ns >= last:
            self._last_ts[reading.machine] = reading.ts_ns
            return reading
        if reading.ts_ns == self._opened_ns:
            # A first value (stamped at the open) that arrived after a change of another of the
            # machine's nodes: expected when initial values come in several publishes, not a clock issue.
            return reading._replace(ts_ns=last)
        self.context.bad_input.report(self.config.id, "timestamp_behind", (
            f"machine {reading.machine} signal {reading.signal}: source time {(last - reading.ts_ns) / 1e6:.0f} ms "
            "before the machine's previous reading; used that time instead (if the server clock is wrong, "
            "set `timestamps: arrival`)"))
        return reading._replace(ts_ns=last)

    # -- opening ----------------------------------------------------------------------------

    async def _open(self, client: Client) -> None:
        cfg = self.config
        self._namespaces = await client.get_namespace_array()
        log.info("source %s: connected to %s (%s/%s), %d namespaces", cfg.id, cfg.endpoint,
                 cfg.security_policy, cfg.security_mode if cfg.security_policy != "None" else "-",
                 len(self._namespaces))
        await self._operation_limits(client)
        discovered_before = self._load_discovered()
        wanted = [(m.id, signal, address) for m in self.machines for signal, address in m.signals.items()]
        found: list[discovery.FoundMachine] = []
        if cfg.discover == "machinery":
            found = await self._discover()
            for machine in found:  # configured (or earlier found) machines: add what they lack
                have = self._signals.get(machine.id)
                if have is None:
                    continue
                if machine.nameplate or machine.kind:  # its nameplate and kind, for what the config left empty
                    self._put(MachineFound(machine=machine.id, source=cfg.id, profile=machine.profile or "",
                                           name=machine.name, kind=machine.kind, nameplate=dict(machine.nameplate)))
                for signal, node in machine.signals.items():
                    if signal not in have:
                        address = addressing.format_address(node, self._namespaces)
                        have[signal] = address
                        wanted.append((machine.id, signal, address))
        items = await self._resolve(wanted, discovered_before)
        for machine in found:
            if machine.id not in self._known:
                items += self._announce(machine)
        await self._subscribe(items)
        self._tasks.append(asyncio.create_task(self._watch(), name=f"opcua:{cfg.id}:watch"))
        if cfg.discover == "machinery":
            self._tasks.append(asyncio.create_task(self._rescan(), name=f"opcua:{cfg.id}:rescan"))
        log.info("source %s: %d machine(s), %d monitored node(s) in %d subscription(s)",
                 cfg.id, len(self._known), len(self._items), len(self._subs))

    async def _resolve(self, wanted: list[tuple[str, str, str]], discovered: set[str]) -> list[_Item]:
        """Node ids for the wanted addresses, proven to exist by one read each."""
        assert self._client is not None
        resolved = await addressing.resolve(self._client, [a for _, _, a in wanted])
        problems: list[tuple[str, str, str]] = []  # machine, signal, what is wrong
        ok: list[tuple[str, str, str, ua.NodeId]] = []
        for machine, signal, address in wanted:
            target = resolved[address]
            if isinstance(target, addressing.AddressError):
                problems.append((machine, signal, str(target)))
            else:
                ok.append((machine, signal, address, target))
        nodes = list(dict.fromkeys(n for *_, n in ok))
        values: dict[ua.NodeId, ua.DataValue] = {}
        for start in range(0, len(nodes), self._read_chunk):
            chunk = nodes[start:start + self._read_chunk]
            values.update(zip(chunk, await self._client.uaclient.read_attributes(chunk, ua.AttributeIds.Value),
                              strict=True))
        items: dict[ua.NodeId, _Item] = {}
        for machine, signal, address, node in ok:
            dv = values[node]
            status = dv.StatusCode
            if status is not None and status.value in (ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid,
                                                       ua.StatusCodes.BadAttributeIdInvalid):
                problems.append((machine, signal, f"node {address!r} ({node.to_string()}): {status.name}"))
                continue
            item = items.get(node) or self._by_node.get(node)
            if item is None:
                value = dv.Value.Value if dv.Value is not None else None
                item = items[node] = _Item(node, address, numeric=isinstance(value, int | float)
                                           and not isinstance(value, bool))
            item.targets.append((machine, signal))
        real = []
        for machine, signal, what in problems:
            if machine in discovered:  # found by discovery earlier, gone from the server now: offline, not fatal
                log.warning("source %s: discovered machine %s is no longer on the server: signal %s: %s",
                            self.config.id, machine, signal, what)
                self._put(Reading(machine, signal, None, now_ns(), Quality.BAD, "BadNodeIdUnknown"))
            else:
                real.append(f"machine {machine} signal {signal}: {what}")
        if real:
            raise UnknownNodes(f"{len(real)} node address(es) not found on "
                               f"{self.config.endpoint}: " + "; ".join(real))
        return list(items.values())

    async def _operation_limits(self, client: Client) -> None:
        """Servers may cap nodes per Read and items per CreateMonitoredItems call (0: no cap)."""
        ids = [ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead),
               ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)]
        limits = []
        for dv in await client.uaclient.read_attributes(ids, ua.AttributeIds.Value):
            value = dv.Value.Value if dv.Value is not None and dv.StatusCode.is_good() else 0
            limits.append(int(value) if isinstance(value, int) and value > 0 else CHUNK)
        self._read_chunk, self._items_chunk = min(CHUNK, limits[0]), min(CHUNK, limits[1])

    def _announce(self, machine: discovery.FoundMachine) -> list[_Item]:
        """A newly discovered machine: MachineFound first, then its items (so no reading can
        arrive for a machine the engine does not know yet). A machine without a state model is
        not tracked: it is reported (``check`` lists it, /metrics counts it) and logged once."""
        if machine.profile is None:
            if machine.id not in self._untrackable:
                self._untrackable.add(machine.id)
                why = "; ".join(machine.seen)
                log.warning("source %s: machine %s is not trackable: %s", self.config.id, machine.id, why)
                self.context.bad_input.report(self.config.id, "not_trackable",
                                              f"machine {machine.id} is not trackable: {why}", subject=machine.id)
            return []
        signals = {s: addressing.format_address(n, self._namespaces) for s, n in machine.signals.items()}
        self._known.add(machine.id)
        self._signals[machine.id] = dict(signals)
        self._save_discovered(machine.id)
        self._put(MachineFound(machine=machine.id, source=self.config.id, profile=machine.profile,
                               name=machine.name, kind=machine.kind, nameplate=dict(machine.nameplate),
                               signals=signals))
        log.info("source %s: found machine %s (%s, profile %s): %s", self.config.id, machine.id,
                 machine.type_name or "Machines folder", machine.profile,
                 ", ".join(f"{s}={a}" for s, a in signals.items()))
        items = []
        for signal, node in machine.signals.items():
            item = self._by_node.get(node) or _Item(node, signals[signal])
            item.targets.append((machine.id, signal))
            if node not in self._by_node:
                items.append(item)
        return items

    async def _discover(self) -> list[discovery.FoundMachine]:
        assert self._client is not None
        first = self._discovery is None
        if self._discovery is None:
            self._discovery = discovery.Discovery(self._client, self._namespaces)
        found = await self._discovery.find()
        if first and not found:
            log.warning("source %s: discover: machinery, but %s has no Machinery Machines folder and no "
                        "MachineToolType or WwMachineType object (yet)", self.config.id, self.config.endpoint)
        return found

    # -- subscriptions ----------------------------------------------------------------------

    async def _new_subscription(self) -> Subscription:
        assert self._client is not None
        cfg = self.config
        keepalive_count = max(1, math.ceil(cfg.keepalive / cfg.publishing_interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cfg.publishing_interval * 1000,
            RequestedLifetimeCount=keepalive_count * 10,  # the spec wants >= 3 keep-alives
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        sub = await self._client.create_subscription(params, None, queue_maxsize=NOTIFICATION_QUEUE,
                                                     overflow=OverflowPolicy.DISCONNECT)
        sub.set_overflow_disconnect_handler(lambda: self._fail(SourceError(
            f"more than {NOTIFICATION_QUEUE} notifications waiting; reconnecting rather than "
            "dropping changes")))
        self._subs.append(sub)
        self._sub_room = cfg.max_items_per_subscription
        self._tasks.append(asyncio.create_task(self._forward(sub), name=f"opcua:{cfg.id}:sub{len(self._subs)}"))
        return sub

    def _request(self, item: _Item, handle: int) -> ua.MonitoredItemCreateRequest:
        cfg = self.config
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = (cfg.sampling_interval if cfg.sampling_interval is not None
                                   else cfg.publishing_interval) * 1000
        params.QueueSize = cfg.queue_size
        params.DiscardOldest = True
        if cfg.deadband is not None and item.numeric:
            params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                DeadbandType=ua.DeadbandType.Absolute, DeadbandValue=cfg.deadband)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=item.node, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)

    async def _subscribe(self, items: list[_Item]) -> None:
        pending = list(items)
        fresh = False
        while pending:
            if not self._subs or self._sub_room <= 0:
                sub, fresh = await self._new_subscription(), True
            sub = self._subs[-1]
            batch = pending[:min(self._items_chunk, self._sub_room)]
            pending = pending[len(batch):]
            handles = [len(self._items) + 1 + i for i in range(len(batch))]
            for handle, item in zip(handles, batch, strict=True):  # registered first: notifications may beat the reply
                self._items[handle] = item
                self._by_node[item.node] = item
            requests = [self._request(i, h) for i, h in zip(batch, handles, strict=True)]
            results = await sub.create_monitored_items(requests)
            refused: list[_Item] = []
            for handle, item, result in zip(handles, batch, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    continue
                del self._items[handle]
                self._by_node.pop(item.node, None)
                if result.value == ua.StatusCodes.BadTooManyMonitoredItems:
                    refused.append(item)
                else:
                    self.context.bad_input.report(self.config.id, "monitored_item",
                                                  f"node {item.address}: {result.name}")
                    for machine, signal in item.targets:
                        self._put(Reading(machine, signal, None, now_ns(), Quality.BAD, result.name))
            self._sub_room -= len(batch) - len(refused)
            if refused:
                if fresh and len(refused) == len(batch) and self._sub_room == self.config.max_items_per_subscription:
                    raise SourceError("the server refuses every monitored item "
                                      "(BadTooManyMonitoredItems) even on a new subscription")
                log.info("source %s: server limits items per subscription; splitting", self.config.id)
                self._sub_room = 0
                pending = refused + pending
            fresh = False

    async def _forward(self, sub: Subscription) -> None:
        """Notifications of one subscription -> Readings, in the order the server sent them."""
        try:
            async for event in sub:
                if isinstance(event, DataChangeEvent):
                    self._on_change(event)
                elif isinstance(event, StatusChangeEvent):
                    status = event.notification.Status
                    self._fail(SourceError(f"subscription {sub.subscription_id} "
                                           f"ended by the server ({status.name})"))
                    return
        except Exception as exc:  # a bug here must not silently stop the data
            self._fail(SourceError(f"notification handling failed: {exc!r}"))

    def _on_change(self, event: DataChangeEvent) -> None:
        item = self._items.get(event.data.subscription_data.client_handle or 0)
        if item is None:
            return
        dv = event.data.monitored_item.Value
        good, status = quality(dv.StatusCode, self.config.uncertain == "bad")
        arrived = now_ns()
        ts = arrived
        if self.config.timestamps == "source":
            ts = to_ns(dv.SourceTimestamp) or to_ns(dv.ServerTimestamp) or arrived
        if not item.seen:
            # The first notification is the value as it stands now; its source timestamp may be
            # hours old. Unless it changed since we opened, it counts from the open (the machine
            # was offline or unknown before; any later change of another node is later than this).
            item.seen = True
            ts = max(ts, self._opened_ns)
        value: Any = None
        if good is Quality.GOOD and dv.Value is not None:
            value = plain(dv.Value.Value)
        for machine, signal in item.targets:
            part = part_of(signal)
            if part is not None:  # a lamp or channel: the rules see the whole stack light or all channels
                signal, value = self._composites.feed(machine, *part, value) if good is Quality.GOOD \
                    else (self._composites.feed(machine, *part, None)[0], None)
            self._put(Reading(machine, signal, value, ts, good, status))

    # -- liveness and rescans ---------------------------------------------------------------

    async def _connection_lost(self, exc: Exception) -> None:
        self._fail(SourceError(f"session to {self.config.endpoint} lost ({_describe(exc)})"))

    async def _watch(self) -> None:
        """Fail when no publish response (data or keep-alive) came for three keep-alive periods."""
        limit = LOST_AFTER_KEEPALIVES * self.config.keepalive
        while True:
            await asyncio.sleep(self.config.keepalive / 2)
            now = time.monotonic()
            for sub in self._subs:
                last = sub.last_publish_at or self._opened_mono
                if now - last > limit:
                    self._fail(SourceError(
                        f"no answer from {self.config.endpoint} for {now - last:.1f}s "
                        f"({LOST_AFTER_KEEPALIVES} keep-alive periods): session lost"))
                    return

    async def _rescan(self) -> None:
        while True:
            await asyncio.sleep(self.config.rescan_interval)
            try:
                found = await self._discover()
                new = [m for m in found if m.id not in self._known]
                items: list[_Item] = []
                for machine in new:
                    items += self._announce(machine)
                if items:
                    await self._subscribe(items)
            except (ConnectionError, OSError, TimeoutError) as exc:
                self._fail(SourceError(f"rescan failed: {_describe(exc)}"))
                return
            except Exception as exc:  # a server that answers oddly: keep the data flowing, say so
                log.warning("source %s: rescan failed: %s", self.config.id, _describe(exc))

    # -- plumbing ---------------------------------------------------------------------------

    def _put(self, event: Event) -> None:
        if not isinstance(event, MachineFound):
            self._horizon = event.ts_ns if self._horizon is None else min(self._horizon, event.ts_ns)
        self._queue.put_nowait(event)

    def _fail(self, exc: SourceError) -> None:
        if not self._failed:
            self._failed = True
            log.warning("source %s: %s", self.config.id, exc)
            self._queue.put_nowait(exc)

    def _discovered_file(self) -> Path:
        return self.context.data_dir / "discovered.json"

    def _load_discovered(self) -> set[str]:
        try:
            return set(json.loads(self._discovered_file().read_text()))
        except (OSError, ValueError):
            return set()

    def _save_discovered(self, machine: str) -> None:
        known = self._load_discovered()
        if machine in known:
            return
        path = self._discovered_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(known | {machine})))
        tmp.replace(path)

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout):
                    await client.disconnect()


def _quiet(client: Client) -> None:
    """asyncua's stale-subscription watchdog off: it recreates a subscription on its own (a second
    owner of retries) after 1.5 keep-alive periods without a publish, which a busy event loop
    reaches with nothing wrong, and wakes twice a second per session."""
    task = getattr(client, "_stale_watchdog_task", None)
    if isinstance(task, asyncio.Task):
        task.cancel()


def _chronological(batch: list[Event | BaseException]) -> list[Event | BaseException]:
    """Readings in source-time order between the other events (which keep their place).

    A publish response groups notifications by monitored item, not by time: with queue sizes
    above one, ``alarm=True@2.5s`` can follow ``execution=READY@3.25s`` in the same response,
    and the tracker would drop it as out of order. The forwarders move whole publish responses
    into the queue at once, so sorting what is queued restores the order the changes happened.
    """
    out: list[Event | BaseException] = []
    run: list[Reading] = []
    for item in batch:
        if isinstance(item, Reading):
            run.append(item)
            continue
        run.sort(key=_ts)
        out.extend(run)
        run = []
        out.append(item)
    run.sort(key=_ts)
    out.extend(run)
    return out


def _ts(reading: Reading) -> int:
    return reading.ts_ns


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc) or type(exc).__name__
