"""The rule engine: a machine's signals -> one canonical state and the reason for it.

Rules are ordered, the first match wins, and the last one (no ``when``) is the default.
Conditions are safe expressions checked by ``simpleeval``'s parser (no attribute access, no
calls), parsed once when the config is loaded. A signal that has not been seen yet is
``None``; a condition that cannot be evaluated on the current values (``None > 50``) does not
match, so a half-known machine falls through to later rules instead of crashing.

Rules run once per message, so evaluation is the hot path. A condition made only of names,
literals, comparisons, ``and``/``or``/``not`` and ``- / //`` is compiled into a Python function
of its signals (several times faster than walking the tree in ``simpleeval``, with the same
result: these operations are Python's in both). Anything else, e.g. ``+``, ``*`` and ``**``,
which ``simpleeval`` guards against huge results, is evaluated by ``simpleeval``.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simpleeval import EvalWithCompoundTypes

from collector.core.errors import CollectorError
from collector.core.model import State

log = logging.getLogger(__name__)

_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
# What a compiled condition may contain: each of these does in Python exactly what simpleeval
# does with it, and none can build a huge result from small inputs.
_COMPILABLE = (ast.Expression, ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List, ast.Set,
               ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.IfExp,
               ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
               ast.BinOp, ast.Sub, ast.Div, ast.FloorDiv)


class RuleError(CollectorError, ValueError):
    """A rule's condition is not a valid safe expression."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    state: State
    when: str | None
    reason: str | None
    tree: ast.AST | None
    names: tuple[str, ...]
    compiled: Callable[..., Any] | None = None
    """The condition as a function of ``names`` (in order), where it can be compiled."""

    def describe(self, values: Mapping[str, Any]) -> str:
        """The reason written with a change: the rule's own text, or its condition and the
        values it saw (e.g. ``spindle_rpm > 50 (spindle_rpm=1200)``)."""
        if self.reason:
            return self.reason
        if self.when is None:
            return "default"
        seen = ", ".join(f"{n}={values.get(n)!r}" for n in self.names)
        return f"{self.when} ({seen})" if seen else self.when


def compile_rule(state: State, when: str | None, reason: str | None = None) -> CompiledRule:
    if when is None:
        return CompiledRule(state, None, reason, None, ())
    evaluator = EvalWithCompoundTypes()
    try:
        tree = evaluator.parse(when)
    except SyntaxError as exc:
        raise RuleError(f"invalid condition {when!r}: {exc.msg}") from exc
    if not isinstance(tree, ast.Expr):
        raise RuleError(f"invalid condition {when!r}: expected an expression (use == to compare)")
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            raise RuleError(f"invalid condition {when!r}: function calls are not allowed")
        if isinstance(node, ast.Attribute):
            raise RuleError(f"invalid condition {when!r}: attribute access is not allowed")
        if isinstance(node, ast.Name) and node.id not in _CONSTANTS:
            found.append((node.col_offset, node.id))
    names = tuple(dict.fromkeys(name for _, name in sorted(found)))  # in reading order, once each
    return CompiledRule(state, when, reason, tree, names, _compile(when, names))


def _compile(when: str, names: tuple[str, ...]) -> Callable[..., Any] | None:
    """``lambda <names>: <when>`` for a condition made only of ``_COMPILABLE`` nodes, else None."""
    expression = ast.parse(when.strip(), mode="eval")
    if not all(isinstance(node, _COMPILABLE) for node in ast.walk(expression)):
        return None
    params = ast.arguments(posonlyargs=[], args=[ast.arg(arg=n) for n in names], kwonlyargs=[], kw_defaults=[],
                           defaults=[])
    function = ast.fix_missing_locations(ast.Expression(body=ast.Lambda(args=params, body=expression.body)))
    # No builtins: the only names it can see are its parameters and the spelled-out constants.
    scope: dict[str, Any] = {"__builtins__": {}, **_CONSTANTS}
    compiled: Callable[..., Any] = eval(compile(function, f"<rule {when!r}>", "eval"), scope)
    return compiled


@dataclass
class RuleSet:
    """A compiled, ordered list of rules. ``evaluate`` is the hot path: one shared evaluator,
    names bound per call."""

    rules: Sequence[CompiledRule]
    errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._evaluator = EvalWithCompoundTypes()
        self._logged: set[str] = set()

    @property
    def signals(self) -> tuple[str, ...]:
        """Every signal name a rule refers to."""
        seen: dict[str, None] = {}
        for rule in self.rules:
            seen.update(dict.fromkeys(rule.names))
        return tuple(seen)

    def evaluate(self, values: Mapping[str, Any]) -> tuple[State, str]:
        for rule in self.rules:
            if rule.tree is None:
                return rule.state, rule.describe(values)
            try:
                if rule.compiled is not None:
                    matched = rule.compiled(*[values.get(name) for name in rule.names])
                else:
                    matched = self.interpret(rule, values)
            except Exception as exc:  # TypeError on None > 50 and the like: the rule does not match
                self._count(rule, exc, values)
                continue
            if matched:
                return rule.state, rule.describe(values)
        return State.OFFLINE, "no rule matched"

    def interpret(self, rule: CompiledRule, values: Mapping[str, Any]) -> Any:
        """``rule``'s condition evaluated by simpleeval (what its compiled form must equal)."""
        self._evaluator.names = {**_CONSTANTS, **{name: values.get(name) for name in rule.names}}
        return self._evaluator.eval(rule.when, previously_parsed=rule.tree)

    def _count(self, rule: CompiledRule, exc: Exception, values: Mapping[str, Any]) -> None:
        key = rule.when or ""
        self.errors[key] = self.errors.get(key, 0) + 1
        # A signal not seen yet is normal at start-up; anything else (a string compared with a
        # number) is a mapping mistake worth one warning.
        if key not in self._logged and all(values.get(n) is not None for n in rule.names):
            self._logged.add(key)
            log.warning("rule %r cannot be evaluated on %s (%s); treated as not matching",
                        key, {n: values.get(n) for n in rule.names}, exc)
