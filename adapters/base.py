"""What every adapter is: a tiny async surface over private protocol code.

    async with factory(source_config, machines, context) as adapter:   # connects
        async for batch in adapter:                                     # Batch of events
            ...                                                         # process, commit, then:
            if batch.ack is not None:
                batch.ack()                                             # e.g. MQTT PUBACKs

The adapter connects in ``__aenter__`` and raises ``SourceError`` (or lets a library error
escape) when the source is lost; it does not retry. The engine's supervisor owns
reconnection: it marks the source's machines offline, waits a jittered, capped backoff and
opens the adapter again. Protocol types never leave the adapter: they are converted to
``collector.core.model`` events at the boundary.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Protocol, Self

from pydantic import Field

from collector.core.badinput import BadInput
from collector.core.durations import Duration
from collector.core.errors import CollectorError
from collector.core.model import Event, MachineFound, MachineInfo
from collector.core.strict import Strict


class SourceConfig(Strict):
    """Fields every source has. Each adapter subclasses it with ``type: Literal[...]``."""

    id: str = Field(description="Unique name of this source; machines refer to it with `source:`.",
                    examples=["cell-a"])
    type: str = Field(description="The adapter that reads this source.")
    max_machines: int = Field(5000, gt=0, description=(
        "Most machines this source may track, configured and discovered together; a new id past it is bad "
        "input `too_many_machines` (so a flood of made-up ids cannot exhaust memory)."))
    reorder_window: Duration = Field(0.0, description=(
        "How long each reading waits, after it arrives, for older readings of its machine that may still come "
        "(several publishers for one machine, a gateway replaying its store, an upload of a buffered batch): held "
        "readings reach the trackers in their own time order, so a reading up to this much late is placed at its "
        "own time. Costs this much in time to visible and about 0.7 KB per held reading. Default 0: a source that "
        "delivers in order pays nothing (nothing is held). A reading older than one already released is late as "
        "without a window (`collector_late_readings_total`). See docs/DESIGN.md, \"Readings out of order\"."),
        examples=["10s"])

    def stamps_at_source(self) -> bool:
        """Whether readings carry the source's own timestamps, which arrive some time after the
        moment they name (transit, clock skew): then time is rolled up only to `tracker.lateness`
        before now. Arrival-stamped readings cannot be late."""
        return True

    def silence_detected_by(self) -> tuple[str, ...]:
        """How the source tells a machine gone silent from one idle and quiet (each a mechanism
        that takes the machine offline): empty when it cannot, and an idle machine that stops
        sending stays idle, unless ``stale_after`` is set. Shared with the capacity feed's offers
        (their ``evidence``) and warned about by ``collector check``."""
        return ()

    def in_shard(self, index: int) -> SourceConfig:
        """The source as shard ``index`` of several collectors runs it (``shard:``): a role only one
        collector may hold (a Sparkplug primary host) stays with shard 0. Default: unchanged."""
        return self

    def catch_up_window(self) -> float:
        """Seconds after a resumed session's connect during which readings are held and sorted (a
        broker may deliver again, late, what it sent before a crash). Default: none."""
        return 0.0

    def redelivers(self) -> bool:
        """Whether the source keeps what we did not acknowledge and delivers it again after a
        crash (a persistent MQTT session at QoS 1). Otherwise the time the collector was not
        running is written offline on the next start."""
        return False


@dataclass(frozen=True, slots=True)
class BoundMachine:
    """A configured machine as its source sees it: its id, its tags and, per signal name,
    the source-specific address (OPC UA node id or browse path, MQTT topic or JSON path...),
    already expanded from the profile's templates."""

    info: MachineInfo
    signals: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.id


@dataclass(slots=True)
class AdapterContext:
    """What the engine lends an adapter: where it may keep files (certificates, session
    state) and where it counts bad input."""

    data_dir: Path
    bad_input: BadInput


class Batch(NamedTuple):
    """Events an adapter hands over at once, in the order it read them.

    ``ack`` (if set) is called once the batch's effects are committed to disk: the MQTT adapter
    sends its PUBACKs then, so a crash before the commit leaves the messages with the broker,
    which delivers them again.
    """

    events: list[Event]
    ack: Callable[[], None] | None = None
    messages: int = 0  # messages ``ack`` acknowledges (a broker sends only so many unacknowledged)
    redelivered: int = 0  # messages the source marked as sent before (MQTT DUP): see collector/reorder.py


def horizon(events: Iterable[Event]) -> int | None:
    """The oldest timestamp among ``events`` (None if none has one): what an adapter holds
    read but not yet handed over. The engine never rolls time past it (the watermark)."""
    stamps = [e.ts_ns for e in events if not isinstance(e, MachineFound)]
    return min(stamps) if stamps else None


class Adapter(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[Batch]: ...

    def horizon_ns(self) -> int | None:
        """The oldest timestamp of the events read but not yet handed over, or None."""
        ...

    def catching_up(self) -> bool:
        """Whether a backlog the source kept for us may still be arriving (a persistent MQTT
        session after a reconnect): until it has, time is rolled up only on the evidence of
        the readings themselves, never by the wall clock."""
        ...


AdapterFactory = Callable[[SourceConfig, Sequence[BoundMachine], AdapterContext], Adapter]


class SourceError(CollectorError):
    """The source is unreachable or was lost; the supervisor will reconnect."""


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """One registry entry: the config model (light, imported at config time) and a loader for
    the adapter class (imported only when a source of this type runs, so that e.g. ``asyncua``
    is not imported to validate an MQTT-only config)."""

    type: str
    config: builtins.type[SourceConfig]
    load: Callable[[], AdapterFactory]
