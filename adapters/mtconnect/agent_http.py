"""MTConnect over HTTP: ``/probe`` once, ``/current``, then ``/sample?from=<nextSequence>`` polls.

    async with MtConnectHttpAdapter(source, machines, context) as adapter:   # probed
        async for batch in adapter:                                          # Readings, in sequence order
            ...

Repeated polls, not the streaming ``interval=`` form (multipart/x-mixed-replace): every answer
is then a whole document whose Header (instanceId, firstSequence, nextSequence, lastSequence)
the session rules are checked against, no multipart parser of our own sits under the data,
and a backlog is read at ``count`` observations per request at once, one request after the
other. It costs up to ``interval`` of delay (1 s by default: the states are kept to the second
anyway) and one small request per interval when nothing happens.

The agent's buffer is kept like a persistent MQTT session: after each commit the adapter
stores (instanceId, nextSequence) in the data dir, so a reconnect or a collector restart goes
on from there and reads what the agent kept meanwhile (``redelivers``). The session rules:

- instanceId changed (the agent restarted, its buffer is gone): probe again and read the new
  instance from its oldest observation on (as after a gap, uncounted), so every change since
  its start that it still holds is read. After a stored session of an older instance (a
  collector restart), the machines are offline from the last answer of that instance on.
- ``from`` older than firstSequence (the agent's buffer went round: OUT_OF_RANGE): counted as
  bad input ``sequence_gap`` and logged; the state at firstSequence (``/current?at=``) and the
  samples after it are read, so nothing the agent still has is lost. An agent that refuses
  ``at`` gives its /current instead.
- An agent that does not answer, or answers with something that is not MTConnect: ``SourceError``
  (the supervisor reconnects with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from adapters.base import AdapterContext, Batch, BoundMachine, SourceConfig, SourceError
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.decoder import MtConnectDecoder
from adapters.mtconnect.documents import Devices, Errors, Streams
from collector.core.model import Connectivity, Event, now_ns

log = logging.getLogger(__name__)

SESSION_FILE = "mtconnect-session.json"


class _Restarted(SourceError):
    """The agent answered with another instanceId (caught by the adapter: probed again; were it ever
    to escape, the supervisor would reconnect, which reads the new instance all the same)."""


class MtConnectHttpAdapter:
    def __init__(self, config: SourceConfig, machines: Sequence[BoundMachine], context: AdapterContext) -> None:
        if not isinstance(config, MtConnectSource) or config.url is None:
            raise TypeError("MtConnectHttpAdapter needs an MtConnectSource with a url")
        self.config = config
        self.url = config.url.rstrip("/")
        self.context = context
        self.decoder = MtConnectDecoder(config, machines, context.bad_input)
        self._client: httpx.AsyncClient | None = None
        self.instance: int | None = None
        self.next: int = 0
        self._first: list[Event] = []
        self._catching_up = False
        self.gaps = 0
        self.restarts = 0

    # -- the adapter surface ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=True)
        opened = now_ns()
        try:
            events = await self._probe()
            stored = self._load()
            resume, heard = (stored or {}).get("next"), (stored or {}).get("heard_ns")
            if stored is not None and stored.get("instance") == self.instance and isinstance(resume, int):
                self.next = resume
                self._catching_up = True  # what the agent kept while we were away comes first
                await self._seed()
                log.info("source %s: resuming agent instance %s at sequence %d", self.config.id, self.instance,
                         self.next)
            else:
                if isinstance(heard, int):  # a session of an instance that is gone: read the new one whole
                    events.append(Connectivity(self.config.id, False, heard,
                                               "agent restarted (new instanceId): its history meanwhile is gone"))
                    events += await self._from_oldest()
                else:  # the first start: how things stand now (what came before is not ours)
                    events += await self._current(floor_ns=opened)
        except BaseException:
            await self._close()
            raise
        self._first = events
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._batches()

    def horizon_ns(self) -> int | None:
        return None  # what is read is handed over before the next await

    def catching_up(self) -> bool:
        return self._catching_up

    # -- the session ------------------------------------------------------------------------------

    async def _batches(self) -> AsyncIterator[Batch]:
        if self._first:
            events, self._first = self._first, []
            yield self._batch(events)
        while True:
            try:
                events, more = await self._sample()
            except _Restarted:
                self.restarts += 1
                log.warning("source %s: the agent restarted (instanceId changed); probing it again", self.config.id)
                self.decoder.restarted()
                events = await self._probe()
                events += await self._from_oldest()
                more = True
            if events:
                yield self._batch(events)
            if not more:
                self._catching_up = False
                await asyncio.sleep(self.config.interval)

    async def _sample(self) -> tuple[list[Event], bool]:
        """One /sample from nextSequence: its readings, and whether the agent holds more already."""
        doc = await self._get(f"/sample?from={self.next}&count={self.config.count}")
        if isinstance(doc, Errors):
            if "OUT_OF_RANGE" in doc.codes and doc.header is not None and doc.header.instance_id == self.instance:
                return await self._gap(doc.message), True
            raise SourceError(f"{self.url}/sample refused: {', '.join(doc.codes) or 'error'}: {doc.message}")
        if not isinstance(doc, Streams):
            return [], False  # counted by the decoder; asked again after the interval
        self._same_instance(doc.header.instance_id)
        events = self.decoder.streams(doc)
        before = self.next
        if doc.header.next is not None:
            self.next = doc.header.next
        # More is waiting when the agent holds sequences past the answer; an answer that did not
        # move on (an agent's bug) waits for the interval all the same rather than ask at once again.
        return events, doc.header.last is not None and before < self.next <= doc.header.last

    async def _gap(self, message: str) -> list[Event]:
        """``from`` fell out of the agent's buffer: counted, then on from the oldest it has."""
        self.gaps += 1
        self.context.bad_input.report(self.config.id, "sequence_gap", (
            f"sequence {self.next} is no longer in the agent's buffer ({message}); reading on from the oldest "
            "it still has (raise the agent's BufferSize or lower `interval`)"))
        return await self._from_oldest()

    async def _from_oldest(self) -> list[Event]:
        """The state at the oldest observation the agent has (``/current?at=firstSequence``), then
        the samples after it: nothing the agent still holds is skipped. An agent that refuses
        ``at`` gives its /current, and the changes between are lost (logged)."""
        now = await self._get("/current")
        if not isinstance(now, Streams):
            raise SourceError(f"{self.url}/current: not an MTConnectStreams document")
        self._same_instance(now.header.instance_id)
        first = now.header.first
        if first is not None:
            at = await self._get(f"/current?at={first}")
            if isinstance(at, Streams) and at.header.instance_id == self.instance:
                self.next = first + 1
                return self.decoder.streams(at, snapshot=True)
        log.warning("source %s: the agent gives no /current?at=%s; going on from its /current", self.config.id, first)
        if now.header.next is not None:
            self.next = now.header.next
        return self.decoder.streams(now, snapshot=True)

    async def _seed(self) -> None:
        """A resumed session: the decoder learns the active alarms as they stood at the stored
        position (``/current?at=``), without handing anything over (the trackers have those
        values), so a new alarm is weighed against the ones still active. Past the buffer, the
        sample that follows is a gap, and the gap's snapshot does it."""
        if self.next < 2:
            return
        doc = await self._get(f"/current?at={self.next - 1}")
        if isinstance(doc, Streams) and doc.header.instance_id == self.instance:
            self.decoder.streams(doc, snapshot=True)

    async def _probe(self) -> list[Event]:
        doc = await self._get("/probe")
        if not isinstance(doc, Devices):
            raise SourceError(f"{self.url}/probe: not an MTConnectDevices document")
        self.instance = doc.header.instance_id
        events = self.decoder.devices(doc)
        log.info("source %s: agent %s instance %s, %d device(s)", self.config.id, self.url, self.instance,
                 len(doc.devices))
        return events

    async def _current(self, floor_ns: int = 0) -> list[Event]:
        doc = await self._get("/current")
        if not isinstance(doc, Streams):
            raise SourceError(f"{self.url}/current: not an MTConnectStreams document")
        self._same_instance(doc.header.instance_id)
        if doc.header.next is None:
            raise SourceError(f"{self.url}/current: no nextSequence in its Header")
        self.next = doc.header.next
        return self.decoder.streams(doc, snapshot=True, floor_ns=floor_ns)

    def _same_instance(self, instance: int) -> None:
        if instance != self.instance:
            raise _Restarted()

    async def _get(self, path: str) -> Devices | Streams | Errors | None:
        assert self._client is not None
        try:
            response = await self._client.get(self.url + path)
        except httpx.HTTPError as exc:
            raise SourceError(f"agent {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        doc = self.decoder.parse(response.content, f"{path.split('?')[0]} ({response.status_code})")
        if isinstance(doc, Errors) and doc.header is not None and self.instance is not None \
                and doc.header.instance_id != self.instance:
            raise _Restarted()
        if doc is None and response.status_code >= 400:
            raise SourceError(f"agent {self.url}{path}: HTTP {response.status_code}")
        return doc

    # -- acknowledgement: the stored session ------------------------------------------------------

    def _batch(self, events: list[Event]) -> Batch:
        instance, after = self.instance, self.next

        def ack() -> None:
            self._save({"url": self.url, "instance": instance, "next": after, "heard_ns": now_ns()})

        return Batch(events, ack)

    def _path(self) -> Path:
        return self.context.data_dir / SESSION_FILE

    def _load(self) -> dict[str, object] | None:
        try:
            stored = json.loads(self._path().read_text())
        except (OSError, ValueError):
            return None
        return stored if isinstance(stored, dict) and stored.get("url") == self.url else None

    def _save(self, session: dict[str, object]) -> None:
        path = self._path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{time.monotonic_ns()}")
            tmp.write_text(json.dumps(session))
            tmp.replace(path)
        except OSError as exc:  # the data is committed; only a later resume starts a little earlier
            log.warning("source %s: cannot store the agent session in %s: %s", self.config.id, path, exc)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
