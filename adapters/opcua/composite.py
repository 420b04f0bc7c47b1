"""Signals made of several nodes: a machine tool has any number of stack-light lamps and NC
channels, and a rule wants one value for each kind, not one per lamp.

Discovery names the parts ``stacklight.<i>.color`` / ``stacklight.<i>.on`` (IA SignalColor and
SignalOn of lamp i) and ``channel_state.<i>.value`` (OPC 40501 ChannelState of channel i): a
part is named ``<whole>.<element>.<field>`` (``collector.core.model.composite_name``). Parts are
read like any other node, and ``Composites.feed`` folds each new part value into the whole:

- ``stacklight``: the SignalColor numbers of the lamps that are on, sorted (``[1]``: red only);
- ``channel_state``: the ChannelState numbers present across the channels, sorted (``[0, 2]``:
  one channel Active, one Reset).

Pure: values in, values out; the adapter stamps and queues what it returns.
"""

from __future__ import annotations

from typing import Any

COMPOSITES = ("stacklight", "channel_state")


def part_of(signal: str) -> tuple[str, str, str] | None:
    """``("stacklight", "0", "on")`` for ``stacklight.0.on``; None for a plain signal."""
    group, _, rest = signal.partition(".")
    if group not in COMPOSITES or not rest:
        return None
    index, _, field = rest.partition(".")
    return (group, index, field) if index and field else None


class Composites:
    def __init__(self) -> None:
        # machine -> group -> element index -> field -> value
        self._parts: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def feed(self, machine: str, group: str, index: str, field: str, value: Any) -> tuple[str, list[Any]]:
        """Take one part's new value; return the composite signal's name and its value now."""
        elements = self._parts.setdefault(machine, {}).setdefault(group, {})
        elements.setdefault(index, {})[field] = value
        if group == "stacklight":
            lit = {e.get("color") for e in elements.values() if e.get("on") is True and e.get("color") is not None}
            return group, sorted(lit, key=_order)
        states = {e.get("value") for e in elements.values() if e.get("value") is not None}
        return group, sorted(states, key=_order)

    def forget(self, machine: str) -> None:
        self._parts.pop(machine, None)


def _order(value: Any) -> tuple[int, Any]:
    """Numbers in order, anything else (a server sending odd types) after them by its text:
    sorting must not fail on mixed types."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    return 1, repr(value)
