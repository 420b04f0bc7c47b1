"""The state models discovery looks for, richest first, and where each one's signals are.

Every address here is a NodeId or a browse name the companion specification fixes (in its own
namespace, looked up by URI on the server), so a server that localises its display texts or
registers namespaces in another order is read the same. The profiles that turn these signals
into states are in ``collector/profiles.py``; docs/PROFILES.md has the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from asyncua import ua

MACHINERY = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL = "http://opcfoundation.org/UA/MachineTool/"
WOODWORKING = "http://opcfoundation.org/UA/Woodworking/"
IA = "http://opcfoundation.org/UA/IA/"


@dataclass(frozen=True, slots=True)
class Spec:
    """A node the specification fixes: its namespace URI and numeric identifier."""

    uri: str
    id: int
    name: str


MACHINES_FOLDER = Spec(MACHINERY, 1001, "Machines")
TYPES = {
    "item_state": Spec(MACHINERY, 1002, "MachineryItemState_StateMachineType"),
    "operation_mode": Spec(MACHINERY, 1008, "MachineryOperationModeStateMachineType"),
    "machine_tool": Spec(MACHINE_TOOL, 13, "MachineToolType"),
    "machine_tool_monitoring": Spec(MACHINE_TOOL, 26, "MachineOperationMonitoringType"),
    "channel": Spec(MACHINE_TOOL, 16, "ChannelMonitoringType"),
    "active_program": Spec(MACHINE_TOOL, 32, "ProductionActiveProgramType"),
    "stacklight": Spec(IA, 1002, "BasicStacklightType"),  # and its subtype StacklightType
    "woodworking_machine": Spec(WOODWORKING, 2, "WwMachineType"),
}
KIND_OF_TYPE = {"MachineToolType": "machine tool", "WwMachineType": "woodworking machine"}

# DI / Machinery identification properties -> nameplate keys (the Digital Nameplate's names).
NAMEPLATE = {"Manufacturer": "manufacturer", "Model": "model", "SerialNumber": "serial_number",
             "ProductInstanceUri": "product_instance_uri", "DeviceClass": "device_class",
             "YearOfConstruction": "year_of_construction"}
# ... and the two that name the machine itself: its id and its display name.
IDENTITY = {"AssetId": "asset_id", "ComponentName": "component_name"}

Path = tuple[tuple[str, str], ...]
"""Browse names from a start node: (namespace URI, name); "" is the OPC UA namespace."""
_CURRENT_STATE_ID: Path = (("", "CurrentState"), ("", "Id"))


class Found(Protocol):
    """An object below a machine, as discovery saw it."""

    node: ua.NodeId
    type_id: ua.NodeId
    parent_type: ua.NodeId | None


IsA = Callable[[ua.NodeId | None, str], bool]
Reads = list[tuple[str, ua.NodeId, Path]]


@dataclass(frozen=True, slots=True)
class Model:
    """One state model: the profile that maps it, where its signals are, and which signal a
    machine must have for the model to count."""

    profile: str
    required: str
    signals: Callable[[IsA, Sequence[Found], ua.NodeId], Reads]

    def trackable(self, signals: dict[str, ua.NodeId]) -> bool:
        return self.required in signals


def _first(objects: Sequence[Found], is_a: IsA, key: str) -> Found | None:
    return next((o for o in objects if is_a(o.type_id, key)), None)


def _opc40001(is_a: IsA, objects: Sequence[Found], machine: ua.NodeId) -> Reads:
    reads: Reads = []
    for signal in ("item_state", "operation_mode"):
        obj = _first(objects, is_a, signal)
        if obj is not None:
            reads.append((signal, obj.node, _CURRENT_STATE_ID))
    return reads


def _machine_tool(is_a: IsA, objects: Sequence[Found], machine: ua.NodeId) -> Reads:
    reads: Reads = []
    monitoring = _first(objects, is_a, "machine_tool_monitoring")
    if monitoring is not None:
        reads.append(("operation_mode", monitoring.node, ((MACHINE_TOOL, "OperationMode"),)))
    lamps = [o for o in objects if is_a(o.parent_type, "stacklight")]
    for i, lamp in enumerate(lamps):
        reads.append((f"stacklight.{i}.color", lamp.node, ((IA, "SignalColor"),)))
        reads.append((f"stacklight.{i}.on", lamp.node, ((IA, "SignalOn"),)))
    channels = [o for o in objects if is_a(o.type_id, "channel")]
    for i, channel in enumerate(channels):
        reads.append((f"channel_state.{i}.value", channel.node, ((MACHINE_TOOL, "ChannelState"),)))
    program = _first(objects, is_a, "active_program")
    if program is not None:
        reads.append(("program_state", program.node, ((MACHINE_TOOL, "State"), ("", "CurrentState"), ("", "Number"))))
    return reads


def _woodworking(is_a: IsA, objects: Sequence[Found], machine: ua.NodeId) -> Reads:
    overview: Path = ((WOODWORKING, "State"), (WOODWORKING, "Machine"), (WOODWORKING, "Overview"))
    return [("unit_state", machine, (*overview, (WOODWORKING, "CurrentState"))),
            ("unit_mode", machine, (*overview, (WOODWORKING, "CurrentMode")))]


MODELS = (
    Model("opc40001", "item_state", _opc40001),
    Model("machinetool", "operation_mode", _machine_tool),
    Model("woodworking", "unit_state", _woodworking),
)


def complete(signals: dict[str, ua.NodeId]) -> dict[str, ua.NodeId]:
    """Drop a stack-light lamp that lacks its colour or its on flag (an acoustic element has
    no colour): the rules could not tell what it shows."""
    out = dict(signals)
    for name in list(out):
        group, _, rest = name.partition(".")
        if group != "stacklight":
            continue
        index = rest.partition(".")[0]
        if f"stacklight.{index}.color" not in signals or f"stacklight.{index}.on" not in signals:
            del out[name]
    return out


def describe(type_name: str, children: list[str], partial: dict[str, dict[str, ua.NodeId]]) -> list[str]:
    """Why a machine is not trackable, for ``check`` and the log: what it is and has."""
    seen = [f"type {type_name}" if type_name else "no machine type (a plain object)"]
    seen.append("objects " + ", ".join(children) if children else "no objects below it")
    for profile, signals in partial.items():
        if signals:
            seen.append(f"{profile} signals {', '.join(sorted(signals))} but not the required one")
    seen.append("no MachineryItemState, no Monitoring/MachineTool/OperationMode (OPC 40501), "
                "no State/Machine/Overview/CurrentState (OPC 40550)")
    return seen
