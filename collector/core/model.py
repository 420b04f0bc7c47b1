"""The events that flow from adapters into the collector, and what the collector emits.

Time is always integer nanoseconds since the Unix epoch (``*_ns``): InfluxDB's own unit, and
integers make the tracker's arithmetic exact (roll-up fields add up to the interval to the ns).
Adapters convert protocol types (paho messages, asyncua DataValues) into these at their
boundary; nothing protocol-specific crosses into ``collector/``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from collector.core.clock import CLOCK

NS_PER_S = 1_000_000_000


class State(enum.StrEnum):
    """The canonical machine state. ``code`` is the ``state_code`` field in InfluxDB."""

    BUSY = "busy"
    IDLE = "idle"
    SETUP = "setup"
    DOWN = "down"
    OFFLINE = "offline"

    @property
    def code(self) -> int:
        return _STATE_CODES[self]


_STATE_CODES = {State.OFFLINE: 0, State.BUSY: 1, State.IDLE: 2, State.SETUP: 3, State.DOWN: 4}


class Quality(enum.StrEnum):
    """Whether a reading can be trusted. Adapters map protocol qualities onto these two
    (e.g. OPC UA ``Uncertain`` per the source's ``uncertain`` setting)."""

    GOOD = "good"
    BAD = "bad"


def now_ns() -> int:
    """Now on the collector's clock (collector/core/clock.py): arrival stamps and deadlines."""
    return CLOCK.now_ns()


class Reading(NamedTuple):
    """One value of one signal of one machine, as the source reported it.

    ``ts_ns`` is the source timestamp where the source has one, else the arrival time.
    ``status`` carries the protocol's quality text (e.g. ``BadNodeIdUnknown``) for reasons.
    A NamedTuple, not a dataclass: it is made once per value on the hot path, and a tuple is
    built several times faster than a frozen dataclass.
    """

    machine: str
    signal: str
    value: Any
    ts_ns: int
    quality: Quality = Quality.GOOD
    status: str = ""


class Sample(NamedTuple):
    """Good values of several signals of one machine at one time: e.g. one JSON message.

    The tracker takes the message whole: the rules run once per message rather than once per
    signal (the MQTT drain's hot path), and half of a message's values never make a state.
    """

    machine: str
    values: dict[str, Any]
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Connectivity:
    """A source (or part of it) went away or came back.

    ``machines`` empty means every machine of ``source``; otherwise only those (e.g. a
    Sparkplug DDEATH names one device). Going offline takes effect at ``ts_ns`` at once,
    without debounce; coming back only clears the flag: the state follows the next readings.
    """

    source: str
    online: bool
    ts_ns: int
    reason: str = ""
    machines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MachineFound:
    """An adapter discovered a machine the config does not list (OPC 40001 discovery, MQTT
    topic auto-registration). Config entries for the same id win over what is found here."""

    machine: str
    source: str
    profile: str
    name: str = ""
    plant: str = ""
    line: str = ""
    cell: str = ""
    signals: dict[str, str] = field(default_factory=dict)
    kind: str = ""
    nameplate: dict[str, str] = field(default_factory=dict)
    """What the machine says of itself (OPC UA DI Identification): manufacturer, model,
    serial_number, product_instance_uri..."""


Event = Reading | Sample | Connectivity | MachineFound


def composite_name(signal: str) -> str:
    """The signal a part is read into: ``stacklight.0.on`` (one lamp's flag) is part of
    ``stacklight``. An adapter reads each part's address and hands the rules the whole
    (adapters/opcua/composite.py); a plain signal is its own."""
    return signal.partition(".")[0]


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """A machine's identity and its InfluxDB tags (few and bounded, see docs/DESIGN.md)."""

    id: str
    plant: str
    line: str = ""
    cell: str = ""
    name: str = ""
    kind: str = ""
    public: bool = False
    nameplate: tuple[tuple[str, str], ...] = ()
    """The Digital Nameplate's keys and values (manufacturer, model, serial_number...): a tuple,
    so the info stays hashable and immutable."""

    def tags(self) -> dict[str, str]:
        tags = {"machine": self.id, "plant": self.plant, "line": self.line}
        if self.cell:
            tags["cell"] = self.cell
        return {k: v for k, v in tags.items() if v}


@dataclass(frozen=True, slots=True)
class StateChange:
    """The machine entered ``state`` at ``ts_ns``; ``previous`` lasted ``previous_ns``."""

    machine: MachineInfo
    ts_ns: int
    state: State
    previous: State
    previous_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class Interval:
    """Time in each state over one wall-clock-aligned interval ``[start_ns, end_ns)``.

    ``seconds_ns`` holds every state, and its values add up to ``end_ns - start_ns`` exactly.
    """

    machine: MachineInfo
    start_ns: int
    end_ns: int
    seconds_ns: dict[State, int]
    state: State


Output = StateChange | Interval
