"""Serving the simulated plant as an OPC UA server (asyncua's server), two ways at once:

A machine switched off goes silent, as with ``type: simulate``; here that shows as a gateway
would show it: its plain tags turn ``BadNoCommunication`` and its OPC 40001 item state
``NotAvailable`` (subscriptions report changes only, so silence alone would look like no change).

- plain tags, as a CNC gateway exposes them: ``Objects/Machines/<machine>/{Execution, SpindleSpeed,
  Alarm, Mode, PackMLState}`` with node ids ``nsu=urn:collector:simulate;s=<machine>.Execution``…
- the OPC 40001 (OPC UA for Machinery) shape that ``discover: machinery`` reads: the Machinery
  namespace's ``Machines`` folder (``i=1001``), under it each machine with ``Identification/AssetId``
  (the machine id) and ``MachineryBuildingBlocks/{MachineryItemState, MachineryOperationMode}``
  state machines (type definitions ``i=1002`` and ``i=1008``), each with ``CurrentState`` and its
  ``Id`` (the NodeId of the state: ``i=5006`` Executing…).

The types are built in code at the NodeIds the specification fixes (only the parts clients
rely on), so no nodeset file is needed. Security policy ``None`` only: a simulator on a bench.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from asyncua import Server, ua

from collector.core.model import MachineInfo, Sample
from collector.simulate.plant import Plant

log = logging.getLogger(__name__)

SIM_URI = "urn:collector:simulate"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
DI_URI = "http://opcfoundation.org/UA/DI/"
_FINITE_STATE_MACHINE_TYPE = 2771
_STATE_TYPE = 2307
_HAS_COMPONENT = 47
ITEM_STATES = {5004: "OutOfService", 5005: "NotAvailable", 5006: "Executing", 5007: "NotExecuting"}
OPERATION_MODES = {5024: "None", 5025: "Maintenance", 5026: "Processing", 5027: "Setup"}
# plain tag -> (simulated quantity, OPC UA type)
TAGS = {"Execution": ("execution", ua.VariantType.String), "SpindleSpeed": ("spindle_rpm", ua.VariantType.Double),
        "Alarm": ("alarm", ua.VariantType.Boolean), "Mode": ("mode", ua.VariantType.String),
        "PackMLState": ("packml_state", ua.VariantType.Int32)}
_DEFAULTS: dict[str, Any] = {"execution": "READY", "spindle_rpm": 0.0, "alarm": False, "mode": "AUTO",
                             "packml_state": 2}


class OpcUaPlant:
    def __init__(self, plant: Plant, endpoint: str) -> None:
        self.plant = plant
        self.endpoint = endpoint
        self.server: Server | None = None
        self.ns: dict[str, int] = {}
        self._last: dict[str, Any] = {}

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"collector simulate: plant {self.plant.name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for uri in (SIM_URI, MACHINERY_URI, DI_URI):
            self.ns[uri] = await server.register_namespace(uri)
        await self._plain_tags(server)
        await self._machinery(server)
        await server.start()
        self.server = server
        log.info("simulate: OPC UA server on %s: %d machine(s) as plain tags (%s) and OPC 40001 machines",
                 self.endpoint, len(self.plant.machines), SIM_URI)

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def publish(self, sample: Sample) -> None:
        """Write what changed; subscriptions report changes only, like a real server's."""
        assert self.server is not None
        sim, m = self.ns[SIM_URI], self.ns[MACHINERY_URI]
        for tag, (quantity, vtype) in TAGS.items():
            await self._write(ua.NodeId(f"{sample.machine}.{tag}", sim), sample.values.get(quantity), vtype,
                              sample.ts_ns)
        for sm, quantity, states in (("MachineryItemState", "item_state", ITEM_STATES),
                                     ("MachineryOperationMode", "operation_mode", OPERATION_MODES)):
            value = sample.values.get(quantity)
            if value not in states:
                continue
            base = f"Machinery.{sample.machine}.{sm}.CurrentState"
            await self._write(ua.NodeId(base, sim), ua.LocalizedText(states[value], "en"),
                              ua.VariantType.LocalizedText, sample.ts_ns)
            await self._write(ua.NodeId(f"{base}.Id", sim), ua.NodeId(value, m), ua.VariantType.NodeId, sample.ts_ns)

    async def switched_off(self, machine: str, ts_ns: int) -> None:
        """A machine was switched off (it went silent): its gateway's tags lose communication
        (Bad status, so a client sees bad quality), its OPC 40001 item state is NotAvailable."""
        assert self.server is not None
        sim, m = self.ns[SIM_URI], self.ns[MACHINERY_URI]
        ts = _datetime(ts_ns)
        for tag in TAGS:
            node = ua.NodeId(f"{machine}.{tag}", sim)
            self._last.pop(node.to_string(), None)  # the next sample writes every tag again
            await self.server.write_attribute_value(node, ua.DataValue(
                StatusCode=ua.StatusCode(ua.StatusCodes.BadNoCommunication), SourceTimestamp=ts, ServerTimestamp=ts))
        base = f"Machinery.{machine}.MachineryItemState.CurrentState"
        await self._write(ua.NodeId(base, sim), ua.LocalizedText(ITEM_STATES[5005], "en"),
                          ua.VariantType.LocalizedText, ts_ns)
        await self._write(ua.NodeId(f"{base}.Id", sim), ua.NodeId(5005, m), ua.VariantType.NodeId, ts_ns)

    async def _write(self, node: ua.NodeId, value: Any, vtype: ua.VariantType, ts_ns: int) -> None:
        key = node.to_string()
        if value is None or self._last.get(key) == value:
            return
        self._last[key] = value
        assert self.server is not None
        ts = _datetime(ts_ns)
        await self.server.write_attribute_value(
            node, ua.DataValue(Value=ua.Variant(value, vtype), SourceTimestamp=ts, ServerTimestamp=ts))

    # -- address space ---------------------------------------------------------------------------

    async def _plain_tags(self, server: Server) -> None:
        sim = self.ns[SIM_URI]
        folder = await server.nodes.objects.add_folder(ua.NodeId("Machines", sim), ua.QualifiedName("Machines", sim))
        for info in self.plant.machines:
            obj = await folder.add_object(ua.NodeId(info.id, sim), ua.QualifiedName(info.id, sim))
            for tag, (quantity, vtype) in TAGS.items():
                await obj.add_variable(ua.NodeId(f"{info.id}.{tag}", sim), ua.QualifiedName(tag, sim),
                                       _DEFAULTS[quantity], vtype)

    async def _machinery(self, server: Server) -> None:
        m, di = self.ns[MACHINERY_URI], self.ns[DI_URI]
        fsm = server.get_node(ua.NodeId(_FINITE_STATE_MACHINE_TYPE, 0))
        for type_id, name, states in ((1002, "MachineryItemState_StateMachineType", ITEM_STATES),
                                      (1008, "MachineryOperationModeStateMachineType", OPERATION_MODES)):
            state_type = await fsm.add_object_type(ua.NodeId(type_id, m), ua.QualifiedName(name, m))
            for state_id, state in states.items():
                await typed_object(server, state_type.nodeid, ua.NodeId(state_id, m), ua.QualifiedName(state, m),
                                    ua.NodeId(_STATE_TYPE, 0))
        machines = await server.nodes.objects.add_folder(ua.NodeId(1001, m), ua.QualifiedName("Machines", m))
        for info in self.plant.machines:
            await self._machinery_machine(server, machines, info, m, di)

    async def _machinery_machine(self, server: Server, folder: Any, info: MachineInfo, m: int, di: int) -> None:
        sim = self.ns[SIM_URI]
        base = f"Machinery.{info.id}"
        machine = await folder.add_object(ua.NodeId(base, sim), ua.QualifiedName(info.name or info.id, sim))
        ident = await machine.add_object(ua.NodeId(f"{base}.Identification", sim),
                                         ua.QualifiedName("Identification", di))
        await ident.add_property(ua.NodeId(f"{base}.AssetId", sim), ua.QualifiedName("AssetId", di), info.id,
                                 ua.VariantType.String)
        blocks = await machine.add_object(ua.NodeId(f"{base}.Blocks", sim),
                                          ua.QualifiedName("MachineryBuildingBlocks", di))
        for sm, type_id, initial, states in (("MachineryItemState", 1002, 5005, ITEM_STATES),
                                             ("MachineryOperationMode", 1008, 5024, OPERATION_MODES)):
            obj = await typed_object(server, blocks.nodeid, ua.NodeId(f"{base}.{sm}", sim),
                                      ua.QualifiedName(sm, m), ua.NodeId(type_id, m))
            current = await obj.add_variable(ua.NodeId(f"{base}.{sm}.CurrentState", sim),
                                             ua.QualifiedName("CurrentState", 0),
                                             ua.LocalizedText(states[initial], "en"), ua.VariantType.LocalizedText)
            await current.add_property(ua.NodeId(f"{base}.{sm}.CurrentState.Id", sim), ua.QualifiedName("Id", 0),
                                       ua.NodeId(initial, m), ua.VariantType.NodeId)


async def typed_object(server: Server, parent: ua.NodeId, node: ua.NodeId, name: ua.QualifiedName,
                        type_definition: ua.NodeId) -> Any:
    """An object of a type without the type's children copied in (asyncua's instantiation would
    give them node ids of its own; the children clients read are added explicitly)."""
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node
    item.BrowseName = name
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(_HAS_COMPONENT, 0)
    item.TypeDefinition = type_definition
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name.Name)
    item.NodeAttributes = attrs
    (result,) = await server.iserver.isession.add_nodes([item])
    result.StatusCode.check()
    return server.get_node(node)


def _datetime(ts_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC)
