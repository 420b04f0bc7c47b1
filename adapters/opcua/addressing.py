"""Node addresses as plant engineers write them, resolved against a live server.

Forms (the part after ``ns=N;`` or ``nsu=URI;`` is OPC UA's own node id syntax):

- ``ns=2;s=CNC01.Execution``, ``i=2258``, ``ns=3;g=<guid>``, ``ns=3;b=<base64>``
- ``nsu=urn:acme:cnc;s=CNC01.Execution``: the namespace by URI, stable across server restarts
  (servers may register namespaces in another order after a restart; an index then points
  elsewhere).
- a browse path from the root: ``/Objects/2:Machines/2:CNC01/2:Execution``; each segment is
  ``N:Name``, ``nsu=URI;Name`` (the URI may contain ``/``; it ends at the ``;``) or ``Name``
  (namespace 0).

Resolution is batched: one TranslateBrowsePaths call for every path of a source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asyncua import Client, ua

from collector.core.errors import BadInputError

_IDENTIFIER = re.compile(r";(?=[isgb]=)")


class AddressError(BadInputError):
    """An address that cannot be parsed, or names a namespace or node the server lacks."""


@dataclass(frozen=True, slots=True)
class PathSegment:
    name: str
    index: int | None = None
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    """Either a node id (``identifier`` like ``s=X``, with an index or a URI) or a browse path."""

    text: str
    identifier: str = ""
    index: int = 0
    uri: str | None = None
    path: tuple[PathSegment, ...] = ()


def parse(text: str) -> ParsedAddress:
    address = text.strip()
    if not address:
        raise AddressError("empty node address")
    if address.startswith("/"):
        return ParsedAddress(text, path=_parse_path(address))
    if address.startswith("nsu="):
        parts = _IDENTIFIER.split(address[4:], maxsplit=1)
        if len(parts) != 2 or not parts[0]:
            raise AddressError(f"{text!r}: expected nsu=<namespace URI>;<i|s|g|b>=<identifier>")
        _check_identifier(text, parts[1])
        return ParsedAddress(text, identifier=parts[1], uri=parts[0])
    if address.startswith("ns="):
        head, sep, rest = address.partition(";")
        if not sep or not head[3:].isdigit():
            raise AddressError(f"{text!r}: expected ns=<index>;<i|s|g|b>=<identifier>")
        _check_identifier(text, rest)
        return ParsedAddress(text, identifier=rest, index=int(head[3:]))
    _check_identifier(text, address)
    return ParsedAddress(text, identifier=address)


def _check_identifier(text: str, identifier: str) -> None:
    if identifier[:2] not in ("i=", "s=", "g=", "b=") or len(identifier) < 3:
        raise AddressError(f"{text!r}: the identifier must start with i=, s=, g= or b=")
    try:
        ua.NodeId.from_string(f"ns=0;{identifier}")
    except Exception as exc:  # asyncua raises several types for malformed ids
        raise AddressError(f"{text!r}: bad identifier {identifier!r} ({exc})") from exc


def _parse_path(text: str) -> tuple[PathSegment, ...]:
    segments: list[PathSegment] = []
    pos = 1
    while pos <= len(text):
        if text.startswith("nsu=", pos):
            end_uri = text.find(";", pos)
            if end_uri < 0:
                raise AddressError(f"{text!r}: a `nsu=` segment needs `;` between the URI and the name")
            uri = text[pos + 4:end_uri]
            end = text.find("/", end_uri)
            end = len(text) if end < 0 else end
            segments.append(PathSegment(text[end_uri + 1:end], uri=uri))
        else:
            end = text.find("/", pos)
            end = len(text) if end < 0 else end
            part = text[pos:end]
            index, colon, name = part.partition(":")
            if colon and index.isdigit():
                segments.append(PathSegment(name, index=int(index)))
            else:
                segments.append(PathSegment(part, index=0))
        if not segments[-1].name:
            raise AddressError(f"{text!r}: empty browse name in path")
        pos = end + 1
    return tuple(segments)


def _namespace(uri: str, namespaces: list[str], text: str) -> int:
    try:
        return namespaces.index(uri)
    except ValueError:
        raise AddressError(f"{text!r}: the server has no namespace {uri!r}") from None


def node_id(parsed: ParsedAddress, namespaces: list[str]) -> ua.NodeId:
    """The node id of a non-path address, with a namespace URI looked up in ``namespaces``."""
    index = parsed.index if parsed.uri is None else _namespace(parsed.uri, namespaces, parsed.text)
    return ua.NodeId.from_string(f"ns={index};{parsed.identifier}")


async def resolve(client: Client, addresses: list[str]) -> dict[str, ua.NodeId | AddressError]:
    """Resolve each address to a node id, or to the error that says why it cannot be (browse
    paths that lead nowhere, unknown namespaces). Node ids are not checked for existence here:
    the caller reads them and learns that from the status."""
    namespaces: list[str] = await client.get_namespace_array()
    out: dict[str, ua.NodeId | AddressError] = {}
    paths: list[tuple[str, ua.BrowsePath]] = []
    for text in dict.fromkeys(addresses):
        try:
            parsed = parse(text)
            if not parsed.path:
                out[text] = node_id(parsed, namespaces)
                continue
            elements = []
            for seg in parsed.path:
                index = seg.index if seg.uri is None else _namespace(seg.uri, namespaces, text)
                elements.append(ua.RelativePathElement(
                    ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IsInverse=False,
                    IncludeSubtypes=True, TargetName=ua.QualifiedName(seg.name, index or 0)))
            paths.append((text, ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder),
                                              RelativePath=ua.RelativePath(Elements=elements))))
        except AddressError as exc:
            out[text] = exc
    if paths:
        results = await client.uaclient.translate_browsepaths_to_nodeids([p for _, p in paths])
        for (text, _), result in zip(paths, results, strict=True):
            if result.StatusCode.is_good() and result.Targets:
                target = result.Targets[0].TargetId  # an ExpandedNodeId: keep the plain NodeId part
                out[text] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
            else:
                out[text] = AddressError(f"{text!r}: browse path not found ({result.StatusCode.name})")
    return out


def format_address(node: ua.NodeId, namespaces: list[str]) -> str:
    """``nsu=<uri>;<identifier>``: the stable form of a node id found by browsing."""
    text: str = node.to_string()
    if node.NamespaceIndex == 0 or node.NamespaceIndex >= len(namespaces):
        return text
    identifier = text.partition(";")[2]  # "ns=2;s=a;b" -> "s=a;b"
    return f"nsu={namespaces[node.NamespaceIndex]};{identifier}"
