"""One colour per state, used by every board: value mappings for state names and codes, and
fixed-colour overrides for series named after a state."""

from __future__ import annotations

from typing import Any

from collector.core.model import State

JSON = dict[str, Any]

# Fixed colours (hex, not theme names, so a theme change cannot recolour a state).
COLOURS: dict[State, str] = {
    State.BUSY: "#73BF69",     # green: producing
    State.IDLE: "#FADE2A",     # yellow: free capacity
    State.SETUP: "#5794F2",    # blue: planned non-producing
    State.DOWN: "#F2495C",     # red: fault
    State.OFFLINE: "#8E8E8E",  # grey: unknown
}
ORDER: tuple[State, ...] = (State.BUSY, State.IDLE, State.SETUP, State.DOWN, State.OFFLINE)


def value_mappings() -> list[JSON]:
    """Both the state names (`state` fields) and the codes (`state_code`) map to the state's colour."""
    options: JSON = {}
    for index, state in enumerate(ORDER):
        entry = {"text": state.value, "color": COLOURS[state], "index": index}
        options[state.value] = entry
        options[str(state.code)] = dict(entry)
    return [{"type": "value", "options": options}]


def colour_overrides(names: dict[State, str] | None = None) -> list[JSON]:
    """Fixed colours for fields named after states (e.g. columns ``busy``, ``idle``)."""
    out = []
    for state in ORDER:
        name = (names or {}).get(state, state.value)
        out.append({
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": COLOURS[state]}}],
        })
    return out
