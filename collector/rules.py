"""The rule engine: a machine's signals -> one canonical state and the reason for it.

Rules are ordered, the first match wins, and the last one (no ``when``) is the default.
Conditions are safe expressions evaluated by ``simpleeval`` (no ``eval``, no attribute access,
no calls), parsed once when the config is loaded. A signal that has not been seen yet is
``None``; a condition that cannot be evaluated on the current values (``None > 50``) does not
match, so a half-known machine falls through to later rules instead of crashing.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simpleeval import EvalWithCompoundTypes

from collector.model import State

log = logging.getLogger(__name__)

_CONSTANTS = {"True", "False", "None", "true", "false", "null"}


class RuleError(ValueError):
    """A rule's condition is not a valid safe expression."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    state: State
    when: str | None
    reason: str | None
    tree: ast.AST | None
    names: tuple[str, ...]

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
    return CompiledRule(state, when, reason, tree, names)


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
        names: dict[str, Any] = {"true": True, "false": False, "null": None, "True": True,
                                 "False": False, "None": None}
        for rule in self.rules:
            if rule.tree is None:
                return rule.state, rule.describe(values)
            for name in rule.names:
                names[name] = values.get(name)
            self._evaluator.names = names
            try:
                matched = self._evaluator.eval(rule.when, previously_parsed=rule.tree)
            except Exception as exc:  # TypeError on None > 50 and the like: the rule does not match
                self._count(rule, exc, values)
                continue
            if matched:
                return rule.state, rule.describe(values)
        return State.OFFLINE, "no rule matched"

    def _count(self, rule: CompiledRule, exc: Exception, values: Mapping[str, Any]) -> None:
        key = rule.when or ""
        self.errors[key] = self.errors.get(key, 0) + 1
        # A signal not seen yet is normal at start-up; anything else (a string compared with a
        # number) is a mapping mistake worth one warning.
        if key not in self._logged and all(values.get(n) is not None for n in rule.names):
            self._logged.add(key)
            log.warning("rule %r cannot be evaluated on %s (%s); treated as not matching",
                        key, {n: values.get(n) for n in rule.names}, exc)
