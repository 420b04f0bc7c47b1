"""Stack-light lamps and NC channels folded into one signal each (adapters/opcua/composite.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.opcua.composite import Composites, part_of
from collector.core.model import composite_name


def test_parts_are_named_after_their_whole() -> None:
    """Test that a lamp's and a channel's parts are recognised and plain signals are not."""
    assert part_of("stacklight.0.on") == ("stacklight", "0", "on")
    assert part_of("channel_state.3.value") == ("channel_state", "3", "value")
    assert part_of("operation_mode") is None
    assert part_of("stacklight") is None
    assert part_of("spindle.speed") is None  # not a known whole: a plain signal that has a dot
    assert composite_name("stacklight.2.color") == "stacklight"


def test_lit_colours_and_present_channel_states() -> None:
    """Test that the stack light is the colours of the lamps that are on, the channels the states present."""
    c = Composites()
    assert c.feed("m", "stacklight", "0", "color", 1) == ("stacklight", [])
    assert c.feed("m", "stacklight", "0", "on", True) == ("stacklight", [1])
    assert c.feed("m", "stacklight", "1", "on", True) == ("stacklight", [1])  # no colour yet: not counted
    assert c.feed("m", "stacklight", "1", "color", 2) == ("stacklight", [1, 2])
    assert c.feed("m", "stacklight", "0", "on", False) == ("stacklight", [2])
    assert c.feed("other", "stacklight", "0", "on", True) == ("stacklight", [])  # machines apart
    assert c.feed("m", "channel_state", "0", "value", 2) == ("channel_state", [2])
    assert c.feed("m", "channel_state", "1", "value", 0) == ("channel_state", [0, 2])
    assert c.feed("m", "channel_state", "0", "value", None) == ("channel_state", [0])  # bad quality: unknown


updates = st.lists(st.tuples(st.sampled_from(["0", "1", "2"]), st.sampled_from(["color", "on"]),
                             st.one_of(st.none(), st.booleans(), st.integers(0, 7), st.text(max_size=2))), max_size=40)


@given(updates)
def test_stack_light_is_what_the_last_values_show(seq: list[tuple[str, str, Any]]) -> None:
    """Test that after any sequence of lamp updates (odd types included) the stack light is the set of
    colours of the lamps whose last `on` is True and whose last colour is known, and never fails."""
    c = Composites()
    last: dict[tuple[str, str], Any] = {}
    value: list[Any] = []
    for index, field, v in seq:
        last[(index, field)] = v
        _, value = c.feed("m", "stacklight", index, field, v)
    expected = {last.get((i, "color")) for i in "012" if last.get((i, "on")) is True} - {None}
    assert set(value) == expected
    assert len(value) == len(expected)
