"""OPC 40001-1 (OPC UA for Machinery) discovery: machines and their state machines, found
by NodeIds the specification fixes, never by display texts (servers localise those) nor by
browse names of the state machines (their namespace differs between companion specs).

- the Machinery namespace ``http://opcfoundation.org/UA/Machinery/``; its ``Machines`` folder
  is ``i=1001`` in it (the spec asks clients to use that NodeId directly);
- below each machine (directly, or one level down, commonly ``MachineryBuildingBlocks``) the
  objects whose type definition is ``MachineryItemState_StateMachineType`` (``i=1002``) or
  ``MachineryOperationModeStateMachineType`` (``i=1008``);
- their ``CurrentState/Id`` property: its value is the NodeId of the current state
  (``i=5006`` Executing...), which the adapter turns into the int identifier.

The machine id is the ``AssetId`` of its ``Identification`` when set, else its browse name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from asyncua import Client, ua

log = logging.getLogger(__name__)

MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
MACHINES_FOLDER = 1001
ITEM_STATE_TYPE = 1002
OPERATION_MODE_TYPE = 1008
SIGNAL_OF_TYPE = {ITEM_STATE_TYPE: "item_state", OPERATION_MODE_TYPE: "operation_mode"}
SEARCH_DEPTH = 2  # machine -> MachineryBuildingBlocks -> the state machine


@dataclass(slots=True)
class FoundMachine:
    id: str
    name: str
    node: ua.NodeId
    signals: dict[str, ua.NodeId] = field(default_factory=dict)


async def _browse(client: Client, nodes: list[ua.NodeId], mask: ua.NodeClass = ua.NodeClass.Unspecified,
                  ) -> list[list[ua.ReferenceDescription]]:
    """Forward hierarchical references of many nodes in one Browse call (plus BrowseNext for
    servers that page their answers)."""
    if not nodes:
        return []
    params = ua.BrowseParameters()
    params.View = ua.ViewDescription()
    params.RequestedMaxReferencesPerNode = 0
    params.NodesToBrowse = [ua.BrowseDescription(
        NodeId=n, BrowseDirection=ua.BrowseDirection.Forward,
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IncludeSubtypes=True,
        NodeClassMask=mask, ResultMask=ua.BrowseResultMask.All) for n in nodes]
    results = await client.uaclient.browse(params)
    out: list[list[ua.ReferenceDescription]] = []
    for result in results:
        refs = list(result.References or [])
        point = result.ContinuationPoint
        while point:
            nxt = ua.BrowseNextParameters()
            nxt.ContinuationPoints = [point]
            more = (await client.uaclient.browse_next(nxt))[0]
            refs += list(more.References or [])
            point = more.ContinuationPoint
        out.append(refs)
    return out


def _plain(node: ua.ExpandedNodeId | ua.NodeId) -> ua.NodeId:
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


async def find_machines(client: Client, namespaces: list[str]) -> list[FoundMachine]:
    """Every machine under the Machines folder with the state machines found below it; empty
    when the server has no Machinery namespace."""
    if MACHINERY_URI not in namespaces:
        return []
    ns = namespaces.index(MACHINERY_URI)
    state_types = {ua.NodeId(t, ns): SIGNAL_OF_TYPE[t] for t in SIGNAL_OF_TYPE}
    (machine_refs,) = await _browse(client, [ua.NodeId(MACHINES_FOLDER, ns)], ua.NodeClass.Object)
    machines = [FoundMachine(id=r.BrowseName.Name, name=r.DisplayName.Text or r.BrowseName.Name,
                             node=_plain(r.NodeId)) for r in machine_refs]
    # Breadth-first below every machine at once: one Browse call per level for all machines.
    state_machines: list[tuple[FoundMachine, str, ua.NodeId]] = []
    identification: dict[int, ua.NodeId] = {}
    frontier = [(m, m.node) for m in machines]
    for depth in range(SEARCH_DEPTH):
        children = await _browse(client, [n for _, n in frontier], ua.NodeClass.Object)
        nxt: list[tuple[FoundMachine, ua.NodeId]] = []
        for (machine, _), refs in zip(frontier, children, strict=True):
            for ref in refs:
                signal = state_types.get(_plain(ref.TypeDefinition))
                if signal is not None:
                    state_machines.append((machine, signal, _plain(ref.NodeId)))
                elif depth == 0 and ref.BrowseName.Name == "Identification":
                    identification[id(machine)] = _plain(ref.NodeId)
                else:
                    nxt.append((machine, _plain(ref.NodeId)))
        frontier = nxt
    await _resolve_ids(client, state_machines)
    await _asset_ids(client, machines, identification)
    return machines


async def _resolve_ids(client: Client, state_machines: list[tuple[FoundMachine, str, ua.NodeId]]) -> None:
    """``<state machine>/0:CurrentState/0:Id`` for each, in one TranslateBrowsePaths call."""
    if not state_machines:
        return
    paths = []
    for _, _, node in state_machines:
        elements = [ua.RelativePathElement(ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                                           IsInverse=False, IncludeSubtypes=True, TargetName=ua.QualifiedName(name, 0))
                    for name in ("CurrentState", "Id")]
        paths.append(ua.BrowsePath(StartingNode=node, RelativePath=ua.RelativePath(Elements=elements)))
    results = await client.uaclient.translate_browsepaths_to_nodeids(paths)
    for (machine, signal, node), result in zip(state_machines, results, strict=True):
        if result.StatusCode.is_good() and result.Targets:
            machine.signals.setdefault(signal, _plain(result.Targets[0].TargetId))
        else:
            log.warning("machine %s: %s state machine %s has no CurrentState/Id (%s)",
                        machine.id, signal, node.to_string(), result.StatusCode.name)


async def _asset_ids(client: Client, machines: list[FoundMachine], identification: dict[int, ua.NodeId]) -> None:
    with_ident = [m for m in machines if id(m) in identification]
    if not with_ident:
        return
    children = await _browse(client, [identification[id(m)] for m in with_ident], ua.NodeClass.Variable)
    asset_nodes = []
    for machine, refs in zip(with_ident, children, strict=True):
        for ref in refs:
            if ref.BrowseName.Name == "AssetId":
                asset_nodes.append((machine, _plain(ref.NodeId)))
    if not asset_nodes:
        return
    values = await client.uaclient.read_attributes([n for _, n in asset_nodes], ua.AttributeIds.Value)
    for (machine, _), dv in zip(asset_nodes, values, strict=True):
        value = dv.Value.Value if dv.Value is not None else None
        if isinstance(value, str) and value.strip():
            machine.id = value.strip()
