"""Built-in profiles: how the standards map onto the canonical states (docs/DESIGN.md).

They are written as ordinary rules over well-known signal names, so a plant engineer reads
them like their own and a user profile can ``extends:`` one and only add signal addresses.

- ``opc40001``: ``item_state`` is the numeric identifier of MachineryItemState's
  ``CurrentState/Id`` NodeId (never the localised display text); ``operation_mode`` that of
  MachineryOperationMode.
- ``machinetool`` (OPC 40501 without an item state): ``operation_mode`` is MachineOperationMode,
  ``stacklight`` the SignalColor numbers of the lamps that are on, ``channel_state`` the
  ChannelState numbers of the NC channels, ``program_state`` the active program's state number.
- ``woodworking`` (OPC 40550): ``unit_state`` is WwUnitStateEnumeration, ``unit_mode``
  WwUnitModeEnumeration, both of the machine's ``State/Machine/Overview``.
- ``packml``: ``state`` is the ISA-TR88 state number; ``unit_mode`` the unit mode (number or name).
- ``mtconnect``: ``availability``, ``execution``, ``controller_mode``, ``functional_mode``,
  ``emergency_stop`` (the data item types in snake case) and ``condition`` (the worst active
  Condition level), with MTConnect's controlled vocabulary as values.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.core.model import State


@dataclass(frozen=True, slots=True)
class BuiltinRule:
    state: State
    when: str | None
    reason: str | None = None


# OPC 40001-1 NodeIds (numeric identifiers in the Machinery namespace).
ITEM_NOT_AVAILABLE, ITEM_OUT_OF_SERVICE, ITEM_EXECUTING, ITEM_NOT_EXECUTING = 5005, 5004, 5006, 5007
MODE_NONE, MODE_MAINTENANCE, MODE_PROCESSING, MODE_SETUP = 5024, 5025, 5026, 5027

OPC40001 = (
    BuiltinRule(State.OFFLINE, f"item_state == {ITEM_NOT_AVAILABLE}", "not available"),
    BuiltinRule(State.DOWN, f"operation_mode == {MODE_MAINTENANCE}", "maintenance (planned)"),
    BuiltinRule(State.SETUP, f"operation_mode == {MODE_SETUP}", "setup"),
    BuiltinRule(State.DOWN, f"item_state == {ITEM_OUT_OF_SERVICE}", "out of service"),
    BuiltinRule(State.BUSY, f"item_state == {ITEM_EXECUTING}", "executing"),
    BuiltinRule(State.IDLE, f"item_state == {ITEM_NOT_EXECUTING}", "not executing"),
    BuiltinRule(State.OFFLINE, None, "no MachineryItemState"),
)

# OPC 40501 (Machine Tools) enumerations: MachineOperationMode, ChannelState, the
# ProductionProgramStateMachine's state numbers; IA's SignalColor.
MT_MANUAL, MT_AUTOMATIC, MT_SETUP, MT_AUTO_MANUAL_INTERVENTION, MT_SERVICE, MT_OTHER = 0, 1, 2, 3, 4, 5
CHANNEL_ACTIVE, CHANNEL_INTERRUPTED, CHANNEL_RESET = 0, 1, 2
PROGRAM_INITIALIZING, PROGRAM_RUNNING, PROGRAM_ENDED, PROGRAM_INTERRUPTED, PROGRAM_ABORTED = 0, 1, 2, 3, 4
SIGNAL_RED = 1
_AUTOMATIC = f"[{MT_AUTOMATIC}, {MT_AUTO_MANUAL_INTERVENTION}, {MT_OTHER}]"

# Time elements after OPC 40501 Annex C / ISO 22400: busy is production time (APT), setup the
# unit's setup time (AUST), down unplanned down time (ADOT: red stack light) or planned
# maintenance (PMT: Service mode), idle the delay time (ADET: automatic, nothing running).
MACHINETOOL = (
    BuiltinRule(State.DOWN, f"{SIGNAL_RED} in (stacklight or [])", "red stack light"),
    BuiltinRule(State.DOWN, f"operation_mode == {MT_SERVICE}", "service mode (planned maintenance)"),
    BuiltinRule(State.SETUP, f"operation_mode in [{MT_SETUP}, {MT_MANUAL}]", "setup or manual mode"),
    BuiltinRule(State.BUSY, f"operation_mode in {_AUTOMATIC} and (program_state == {PROGRAM_RUNNING} "
                f"or {CHANNEL_ACTIVE} in (channel_state or []))", "automatic, a program or channel running"),
    BuiltinRule(State.IDLE, f"operation_mode in {_AUTOMATIC}", "automatic, nothing running"),
    BuiltinRule(State.OFFLINE, None, "no operation mode"),
)

# OPC 40550 (Woodworking) WwUnitStateEnumeration and WwUnitModeEnumeration.
WW_OFFLINE, WW_STANDBY, WW_READY, WW_WORKING, WW_ERROR = 0, 1, 2, 3, 4
WW_MODE_SETUP = 4

WOODWORKING = (
    BuiltinRule(State.OFFLINE, f"unit_state == {WW_OFFLINE}", "OFFLINE"),
    BuiltinRule(State.DOWN, f"unit_state == {WW_ERROR}", "ERROR"),
    BuiltinRule(State.SETUP, f"unit_mode == {WW_MODE_SETUP}", "SETUP mode"),
    BuiltinRule(State.BUSY, f"unit_state == {WW_WORKING}", "WORKING"),
    BuiltinRule(State.IDLE, f"unit_state in [{WW_STANDBY}, {WW_READY}]", "READY or STANDBY"),
    BuiltinRule(State.OFFLINE, None, "no WwUnitState"),
)

# ISA-TR88 / PackML state numbers.
PACKML_STATES = {
    "Clearing": 1, "Stopped": 2, "Starting": 3, "Idle": 4, "Suspended": 5, "Execute": 6,
    "Stopping": 7, "Aborting": 8, "Aborted": 9, "Holding": 10, "Held": 11, "Unholding": 12,
    "Suspending": 13, "Unsuspending": 14, "Resetting": 15, "Completing": 16, "Complete": 17,
}
_PACKML_DOWN = ["Held", "Holding", "Unholding", "Aborting", "Aborted", "Clearing"]
_PACKML_IDLE = ["Idle", "Stopped", "Complete", "Completing", "Starting", "Resetting", "Stopping",
                "Suspended", "Suspending", "Unsuspending"]


def _numbers(names: list[str]) -> str:
    return "[" + ", ".join(str(PACKML_STATES[n]) for n in names) + "]"


PACKML = (
    BuiltinRule(State.SETUP, "unit_mode in ['Maintenance', 'Manual', 'maintenance', 'manual', 2, 3]",
                "unit mode maintenance/manual"),
    BuiltinRule(State.BUSY, f"state == {PACKML_STATES['Execute']}", "Execute"),
    BuiltinRule(State.DOWN, f"state in {_numbers(_PACKML_DOWN)}", "held/aborted"),
    BuiltinRule(State.IDLE, f"state in {_numbers(_PACKML_IDLE)}", "not executing"),
    BuiltinRule(State.OFFLINE, None, "unknown PackML state"),
)

# MTConnect controlled vocabulary (SYSTEM.md's row; docs in adapters/mtconnect/README.md). STOPPED is
# idle, not down: the standard's STOPPED is a program stopped by the operator or the control, and
# faults are Conditions; WAIT (suspended on an external signal) is not producing either.
_MTC_IDLE = ["READY", "INTERRUPTED", "FEED_HOLD", "STOPPED", "WAIT", "OPTIONAL_STOP", "PROGRAM_STOPPED",
             "PROGRAM_COMPLETED", "PROGRAM_OPTIONAL_STOP"]

MTCONNECT = (
    BuiltinRule(State.OFFLINE, "availability == 'UNAVAILABLE'", "unavailable"),
    BuiltinRule(State.DOWN, "condition == 'FAULT'", "fault condition"),
    BuiltinRule(State.DOWN, "emergency_stop == 'TRIGGERED'", "emergency stop"),
    BuiltinRule(State.DOWN, "functional_mode == 'MAINTENANCE'", "maintenance"),
    BuiltinRule(State.SETUP, "functional_mode in ['SETUP', 'TEARDOWN']", "setup"),
    BuiltinRule(State.SETUP, "controller_mode in ['MANUAL', 'EDIT']", "manual or edit mode"),
    BuiltinRule(State.BUSY, "execution == 'ACTIVE'", "active"),
    BuiltinRule(State.IDLE, "execution in " + repr(_MTC_IDLE), "not executing"),
    BuiltinRule(State.OFFLINE, None, "no execution state"),
)

BUILTIN: dict[str, tuple[BuiltinRule, ...]] = {
    "opc40001": OPC40001, "machinetool": MACHINETOOL, "woodworking": WOODWORKING, "packml": PACKML,
    "mtconnect": MTCONNECT,
}
