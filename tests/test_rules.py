"""The rule engine: safe expressions, first match wins, unknown values never crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.model import State
from collector.rules import RuleError, RuleSet, compile_rule

VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                   st.lists(st.integers(), max_size=3))


@given(st.dictionaries(st.sampled_from(["alarm", "estop", "spindle_rpm", "execution", "door_closed"]), VALUES))
def test_evaluate_never_raises_and_respects_order(values: dict[str, object]) -> None:
    """Test that any signal values give a state: the first matching rule's, else the default."""
    rules = RuleSet([
        compile_rule(State.DOWN, "alarm or estop"),
        compile_rule(State.BUSY, "spindle_rpm > 50 and door_closed"),
        compile_rule(State.SETUP, "execution in ['SETUP', 'WARMUP']"),
        compile_rule(State.IDLE, None),
    ])
    state, reason = rules.evaluate(values)
    if values.get("alarm") or values.get("estop"):
        assert state is State.DOWN
    elif state is State.BUSY:
        assert values.get("door_closed") and values["spindle_rpm"] > 50  # type: ignore[operator]
    assert reason


@pytest.mark.parametrize("bad", ["__import__('os')", "x.__class__", "open('f')", "a >", "x = 1"])
def test_unsafe_or_broken_conditions_are_rejected_at_load(bad: str) -> None:
    """Test that calls, attribute access and syntax errors are refused when the config is loaded."""
    with pytest.raises(RuleError):
        compile_rule(State.BUSY, bad)


def test_names_are_collected_once() -> None:
    """Test that a rule set knows every signal its rules read, in order, without constants."""
    rules = RuleSet([compile_rule(State.DOWN, "alarm or estop == True"), compile_rule(State.BUSY, "alarm and rpm")])
    assert rules.signals == ("alarm", "estop", "rpm")


def test_no_default_means_offline() -> None:
    """Test that when no rule matches and there is no default, the machine is offline (unknown)."""
    rules = RuleSet([compile_rule(State.BUSY, "rpm > 50")])
    assert rules.evaluate({"rpm": 10}) == (State.OFFLINE, "no rule matched")
