"""The rule engine: safe expressions, first match wins, unknown values never crash."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.core.model import State
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


CONDITIONS = ["alarm", "not alarm", "alarm or estop", "spindle_rpm > 50 and door_closed", "0 < spindle_rpm <= 9000",
              "execution in ['SETUP', 'WARMUP']", "execution not in ('A', 'B')", "execution == 'ACTIVE'",
              "estop is None", "spindle_rpm - door_closed", "spindle_rpm / 2 >= 1",
              "spindle_rpm // 3", "-spindle_rpm < 0", "alarm if estop else door_closed", "alarm == true",
              "execution != null", "{1, 2} and alarm"]


@given(st.sampled_from(CONDITIONS),
       st.dictionaries(st.sampled_from(["alarm", "estop", "spindle_rpm", "execution", "door_closed"]), VALUES))
def test_compiled_conditions_agree_with_simpleeval(when: str, values: dict[str, object]) -> None:
    """Test that a compiled condition gives what simpleeval gives on any values: the same result,
    or an error in both (which makes the rule not match)."""
    rule = compile_rule(State.BUSY, when)
    assert rule.compiled is not None, when
    rules = RuleSet([rule])

    def outcome(run: Callable[[], object]) -> tuple[str, object]:
        try:
            result = run()
        except Exception as exc:
            return "error", type(exc).__name__
        return "value", result if result == result else "nan"  # nan != nan

    compiled = outcome(lambda: rule.compiled(*[values.get(n) for n in rule.names]))  # type: ignore[misc]
    interpreted = outcome(lambda: rules.interpret(rule, values))
    assert compiled[0] == interpreted[0], (compiled, interpreted)
    assert compiled[0] == "error" or compiled == interpreted, (compiled, interpreted)


@pytest.mark.parametrize("when", ["spindle_rpm + 1 > 2", "spindle_rpm * 2 > 3", "2 ** spindle_rpm", "execution % 2",
                                  "x[0] == 1"])
def test_conditions_outside_the_compiled_subset_are_interpreted(when: str) -> None:
    """Test that ``+``, ``*``, ``**``, ``%`` and subscripts (which simpleeval guards or handles its own way)
    are left to simpleeval, and still evaluate."""
    rule = compile_rule(State.BUSY, when)
    assert rule.compiled is None
    assert RuleSet([rule, compile_rule(State.IDLE, None)]).evaluate({"spindle_rpm": 4, "execution": 3, "x": [1]})[0] \
        is State.BUSY


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
