"""Machine discovery by type: machines and the richest state model each one has, found by the
NodeIds and browse names the companion specifications fix, never by display texts (servers
localise those).

Where machines are:
- the Machinery ``Machines`` folder (``i=1001`` in ``http://opcfoundation.org/UA/Machinery/``;
  OPC 40001-1 asks clients to use that NodeId directly);
- any object under ``Objects`` (three levels deep) whose type is ``MachineToolType`` (OPC 40501)
  or ``WwMachineType`` (OPC 40550), or a subtype a vendor derived from them.

Per machine, the first state model found wins (``models.py`` says what each reads):
1. ``opc40001``: a ``MachineryItemState`` state machine (plus ``MachineryOperationMode``)
   anywhere within three levels: ``MachineryBuildingBlocks`` or, on OPC 40501 machines,
   ``Monitoring/MachineTool``;
2. ``machinetool``: OPC 40501's ``Monitoring/MachineTool/OperationMode``, the stack light's
   lamps, the NC channels and the active program's state;
3. ``woodworking``: OPC 40550's ``State/Machine/Overview`` ``CurrentState`` and ``CurrentMode``;
4. none: the machine is not trackable, and ``FoundMachine.seen`` says what it had instead.

Types are matched with their subtypes (one Browse of ``HasSubtype`` per base type), and every
level of the search is one Browse call for all machines together, so discovery costs a fixed
number of round trips however many machines a server has.

The machine id is the ``AssetId`` of its DI ``Identification`` when set, else its browse name;
the rest of the identification (manufacturer, model, serial number, product instance URI)
becomes the machine's nameplate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from asyncua import Client, ua

from adapters.opcua import models
from adapters.opcua.models import Spec

log = logging.getLogger(__name__)

OBJECTS_DEPTH = 3  # Objects -> folder -> folder -> machine
MACHINE_DEPTH = 3  # machine -> Monitoring -> Stacklight -> lamp; -> MachineTool -> MachineryItemState


@dataclass(slots=True)
class FoundMachine:
    id: str
    name: str
    node: ua.NodeId
    type_name: str = ""
    """The browse name of the machine's type definition (``MachineToolType``...)."""
    profile: str | None = None
    """The state model chosen (``opc40001``, ``machinetool``, ``woodworking``), None if none."""
    signals: dict[str, ua.NodeId] = field(default_factory=dict)
    nameplate: dict[str, str] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    """What the search found below the machine: the reason given when it is not trackable."""

    @property
    def kind(self) -> str:
        return models.KIND_OF_TYPE.get(self.type_name, "")


@dataclass(slots=True)
class _Object:
    """An object below a machine: its type and its parent's (a stack light's lamps are known
    by their parent), and how deep it lies."""

    machine: FoundMachine
    node: ua.NodeId
    type_id: ua.NodeId
    parent_type: ua.NodeId | None
    name: str
    depth: int


class _Search:
    """One discovery pass over a server: the namespaces, the subtype sets, the browse helper."""

    def __init__(self, client: Client, namespaces: list[str]) -> None:
        self.client = client
        self.namespaces = namespaces
        self.types: dict[str, set[ua.NodeId]] = {}

    def ns(self, uri: str) -> int | None:
        return self.namespaces.index(uri) if uri in self.namespaces else None

    def node(self, spec: Spec) -> ua.NodeId | None:
        index = self.ns(spec.uri)
        return None if index is None else ua.NodeId(spec.id, index)

    async def browse(self, nodes: list[ua.NodeId], mask: ua.NodeClass = ua.NodeClass.Object,
                     reference: int = ua.ObjectIds.HierarchicalReferences) -> list[list[ua.ReferenceDescription]]:
        """Forward references of many nodes in one Browse call (plus BrowseNext for servers
        that page their answers)."""
        if not nodes:
            return []
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.RequestedMaxReferencesPerNode = 0
        params.NodesToBrowse = [ua.BrowseDescription(
            NodeId=n, BrowseDirection=ua.BrowseDirection.Forward, ReferenceTypeId=ua.NodeId(reference),
            IncludeSubtypes=True, NodeClassMask=mask, ResultMask=ua.BrowseResultMask.All) for n in nodes]
        results = await self.client.uaclient.browse(params)
        out: list[list[ua.ReferenceDescription]] = []
        for result in results:
            refs = list(result.References or [])
            point = result.ContinuationPoint
            while point:
                nxt = ua.BrowseNextParameters()
                nxt.ContinuationPoints = [point]
                more = (await self.client.uaclient.browse_next(nxt))[0]
                refs += list(more.References or [])
                point = more.ContinuationPoint
            out.append(refs)
        return out

    async def subtypes(self) -> None:
        """Every known type with the subtypes the server defines below it, in one Browse call
        per level of the type tree."""
        roots: dict[str, ua.NodeId] = {}
        for key, spec in models.TYPES.items():
            node = self.node(spec)
            if node is not None:
                roots[key] = node
        self.types = {key: {node} for key, node in roots.items()}
        frontier = [(key, node) for key, node in roots.items()]
        for _ in range(4):  # vendor subtypes of subtypes; deeper trees are not seen in practice
            children = await self.browse([n for _, n in frontier], ua.NodeClass.ObjectType, ua.ObjectIds.HasSubtype)
            frontier = [(key, _plain(ref.NodeId)) for (key, _), refs in zip(frontier, children, strict=True)
                        for ref in refs]
            for key, node in frontier:
                self.types[key].add(node)
            if not frontier:
                break

    def is_a(self, type_id: ua.NodeId | None, key: str) -> bool:
        return type_id is not None and type_id in self.types.get(key, ())

    async def translate(self, starts: list[tuple[ua.NodeId, tuple[tuple[str, str], ...]]]) -> list[ua.NodeId | None]:
        """The node at each (start, path of (namespace URI, browse name)), None where there is
        none, in one TranslateBrowsePathsToNodeIds call."""
        if not starts:
            return []
        paths: list[ua.BrowsePath] = []
        usable: list[int] = []
        for start, path in starts:
            elements = []
            for uri, name in path:
                index = self.ns(uri) if uri else 0
                if index is None:
                    break
                elements.append(ua.RelativePathElement(
                    ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IsInverse=False,
                    IncludeSubtypes=True, TargetName=ua.QualifiedName(name, index)))
            else:
                usable.append(len(paths))
                paths.append(ua.BrowsePath(StartingNode=start, RelativePath=ua.RelativePath(Elements=elements)))
                continue
            usable.append(-1)
        results = await self.client.uaclient.translate_browsepaths_to_nodeids(paths) if paths else []
        out: list[ua.NodeId | None] = []
        for index in usable:
            result = results[index] if index >= 0 else None
            good = result is not None and result.StatusCode.is_good() and result.Targets
            out.append(_plain(result.Targets[0].TargetId) if good and result is not None else None)
        return out


class Discovery:
    """Discovery over one session. The first ``find`` examines every machine; later ones (the
    rescans) look only for machines not examined yet, plus those that had no state model (a
    server may build its address space in steps). The type tree is browsed once per session.
    A rescan of a server with nothing new costs the Browse calls that list the candidates."""

    def __init__(self, client: Client, namespaces: list[str]) -> None:
        self.search = _Search(client, namespaces)
        self.examined: set[ua.NodeId] = set()
        self._typed = False

    async def find(self) -> list[FoundMachine]:
        """Machines not examined before, each with the state model chosen for it (or none, and why)."""
        search = self.search
        if not self._typed:
            await search.subtypes()
            self._typed = True
        machines = [m for m in await _candidates(search) if m.node not in self.examined]
        if not machines:
            return []
        objects = await _objects_below(search, machines)
        await _choose_models(search, machines, objects)
        await _identify(search, machines, objects)
        self.examined.update(m.node for m in machines if m.profile is not None)
        return machines


async def find_machines(client: Client, namespaces: list[str]) -> list[FoundMachine]:
    """Every machine of the server with the state model chosen for it (or none, and why)."""
    return await Discovery(client, namespaces).find()


async def _candidates(search: _Search) -> list[FoundMachine]:
    """The Machines folder's objects, then machine-typed objects anywhere under Objects."""
    found: dict[ua.NodeId, FoundMachine] = {}
    folder = search.node(models.MACHINES_FOLDER)
    if folder is not None:
        (refs,) = await search.browse([folder])
        for ref in refs:
            _add_candidate(search, found, ref)
    frontier = [ua.NodeId(ua.ObjectIds.ObjectsFolder)]
    skip = {ua.NodeId(ua.ObjectIds.Server), folder}
    for _ in range(OBJECTS_DEPTH):
        nxt = []
        for refs in await search.browse(frontier):
            for ref in refs:
                node = _plain(ref.NodeId)
                if node in skip or node in found:
                    continue
                type_id = _plain(ref.TypeDefinition)
                if search.is_a(type_id, "machine_tool") or search.is_a(type_id, "woodworking_machine"):
                    _add_candidate(search, found, ref)
                else:
                    nxt.append(node)
        frontier = nxt
    return list(found.values())


def _add_candidate(search: _Search, found: dict[ua.NodeId, FoundMachine], ref: ua.ReferenceDescription) -> None:
    node, type_id = _plain(ref.NodeId), _plain(ref.TypeDefinition)
    type_name = next((models.TYPES[key].name for key in ("machine_tool", "woodworking_machine")
                      if search.is_a(type_id, key)), "")
    found[node] = FoundMachine(id=ref.BrowseName.Name, name=ref.DisplayName.Text or ref.BrowseName.Name,
                               node=node, type_name=type_name)


async def _objects_below(search: _Search, machines: list[FoundMachine]) -> list[_Object]:
    """Every object within ``MACHINE_DEPTH`` levels below each machine, breadth-first: one
    Browse call per level for all machines."""
    objects: list[_Object] = []
    frontier: list[tuple[FoundMachine, ua.NodeId, ua.NodeId | None]] = [(m, m.node, None) for m in machines]
    for depth in range(1, MACHINE_DEPTH + 1):
        children = await search.browse([n for _, n, _ in frontier])
        nxt: list[tuple[FoundMachine, ua.NodeId, ua.NodeId | None]] = []
        for (machine, _, parent_type), refs in zip(frontier, children, strict=True):
            for ref in refs:
                obj = _Object(machine, _plain(ref.NodeId), _plain(ref.TypeDefinition), parent_type,
                              ref.BrowseName.Name, depth)
                objects.append(obj)
                nxt.append((machine, obj.node, obj.type_id))
        frontier = nxt
    return objects


async def _choose_models(search: _Search, machines: list[FoundMachine], objects: list[_Object]) -> None:
    """The first state model each machine has, with the nodes of its signals."""
    wanted: list[tuple[FoundMachine, str, ua.NodeId, tuple[tuple[str, str], ...]]] = []
    by_machine: dict[int, list[_Object]] = {}
    for obj in objects:
        by_machine.setdefault(id(obj.machine), []).append(obj)
    for machine in machines:
        for model in models.MODELS:
            reads = model.signals(search.is_a, by_machine.get(id(machine), []), machine.node)
            wanted += [(machine, model.profile + ":" + signal, start, path) for signal, start, path in reads]
    nodes = await search.translate([(start, path) for _, _, start, path in wanted])
    found: dict[int, dict[str, dict[str, ua.NodeId]]] = {}
    for (machine, key, _, _), node in zip(wanted, nodes, strict=True):
        if node is not None:
            profile, _, signal = key.partition(":")
            found.setdefault(id(machine), {}).setdefault(profile, {})[signal] = node
    for machine in machines:
        have = found.get(id(machine), {})
        for model in models.MODELS:
            signals = have.get(model.profile, {})
            signals = models.complete(signals)
            if model.trackable(signals):
                machine.profile, machine.signals = model.profile, signals
                break
        else:
            machine.seen = models.describe(machine.type_name, [o.name for o in by_machine.get(id(machine), [])
                                                               if o.depth == 1][:8], have)


async def _identify(search: _Search, machines: list[FoundMachine], objects: list[_Object]) -> None:
    """The DI ``Identification`` of each machine (directly below it, or below
    ``MachineryBuildingBlocks``): the asset id and the nameplate."""
    idents = {}
    for obj in objects:
        if obj.name == "Identification" and id(obj.machine) not in idents:
            idents[id(obj.machine)] = obj
    with_ident = [m for m in machines if id(m) in idents]
    if not with_ident:
        return
    children = await search.browse([idents[id(m)].node for m in with_ident], ua.NodeClass.Variable)
    reads: list[tuple[FoundMachine, str, ua.NodeId]] = []
    for machine, refs in zip(with_ident, children, strict=True):
        for ref in refs:
            key = models.NAMEPLATE.get(ref.BrowseName.Name) or models.IDENTITY.get(ref.BrowseName.Name)
            if key is not None:
                reads.append((machine, key, _plain(ref.NodeId)))
    if not reads:
        return
    values = await search.client.uaclient.read_attributes([n for *_, n in reads], ua.AttributeIds.Value)
    for (machine, key, _), dv in zip(reads, values, strict=True):
        value = dv.Value.Value if dv.Value is not None else None
        if isinstance(value, ua.LocalizedText):
            value = value.Text
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            value = str(value)  # YearOfConstruction
        if not isinstance(value, str) or not value.strip():
            continue
        if key == "asset_id":
            machine.id = value.strip()
        elif key == "component_name":
            machine.name = value.strip()
        else:
            machine.nameplate[key] = value.strip()


def _plain(node: ua.ExpandedNodeId | ua.NodeId) -> ua.NodeId:
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)
