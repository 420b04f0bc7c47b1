"""Loading the YAML config: ``${VAR}`` substitution, validation, and errors a plant engineer
can act on (file, line and column, the field path, what was expected, a did-you-mean).

    try:
        config = load_config(Path("config.yaml"))
    except ConfigError as exc:
        print(exc)          # one line per problem: config.yaml:12:5: machines[2].profile: ...
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from collector.config import Config
from collector.core.errors import CollectorError
from collector.machines import ResolvedMachine, ResolveError, resolve_all

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(CollectorError):
    """The config cannot be used; ``problems`` lists every reason, each with its place."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    machines: list[ResolvedMachine]
    path: Path


# -- YAML with positions ---------------------------------------------------------------------

def _positions(node: yaml.Node, loc: Loc, out: dict[Loc, tuple[int, int]], keys: dict[Loc, tuple[int, int]]) -> None:
    out[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            keys[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _positions(value_node, (*loc, key), out, keys)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*loc, i), out, keys)


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*|file:[^}]+)(?::-(?P<default>[^}]*))?\}")


def _substitute(value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    """``${VAR}``, ``${VAR:-default}`` and ``${file:/path}`` (a secret file, trailing newline
    stripped) in every string of the document."""
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name.startswith("file:"):
            path = Path(name[5:])
            try:
                return path.read_text().rstrip("\n")
            except OSError as exc:
                problems.append((loc, f"cannot read secret file {path}: {exc.strerror}"))
                return ""
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append((loc, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"))
        return ""

    return _VAR.sub(replace, value)


# -- error locations ---------------------------------------------------------------------------

def _walk_data(data: Any, loc: Loc) -> Loc:
    """Pydantic's error location with its internal steps (union tags, validator names) dropped,
    so it matches the YAML document."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
            out.append(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            out.append(part)
        elif isinstance(data, dict) and isinstance(part, str) and part not in data and part == loc[-1]:
            out.append(part)  # a missing required field: point at its parent, name it
    return tuple(out)


def format_path(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _parse_path(path: str) -> Loc:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(token[1:-1]) if token.startswith("[") else int(token) if token.isdigit() else token)
    return tuple(parts)


def _models_at(root: type[BaseModel], loc: Loc) -> list[type[BaseModel]]:
    """The model classes that can sit at ``loc`` (pydantic's raw loc, with union tags), for
    suggesting the keys they allow."""
    current: list[Any] = [root]
    for part in loc:
        nxt: list[Any] = []
        for tp in _unwrap(current):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if isinstance(part, str) and part in tp.model_fields:
                    nxt.append(tp.model_fields[part].annotation)
                elif isinstance(part, str) and _tag(tp) == part:
                    nxt.append(tp)  # a discriminated union's tag step
            elif typing.get_origin(tp) is list and isinstance(part, int):
                nxt.append(typing.get_args(tp)[0])
            elif typing.get_origin(tp) is dict and isinstance(part, str):
                nxt.append(typing.get_args(tp)[1])
        current = nxt
    return [tp for tp in _unwrap(current) if isinstance(tp, type) and issubclass(tp, BaseModel)]


def _unwrap(types_: list[Any]) -> Iterator[Any]:
    for tp in types_:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            yield from _unwrap([typing.get_args(tp)[0]])
        elif origin is typing.Union or origin is types.UnionType:
            yield from _unwrap(list(typing.get_args(tp)))
        else:
            yield tp


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        value = typing.get_args(field.annotation)[0]
        return str(value)
    return None


_EXPECTED = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown key",
}


def _message(err: Any, data: Any, clean: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        allowed = sorted({f for m in _models_at(Config, err["loc"][:-1]) for f in m.model_fields})
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{hint} (allowed: {', '.join(allowed)})"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown source type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "missing `type` (which adapter reads this source?)"
    if kind == "missing":
        return _EXPECTED[kind]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "input" in err and not isinstance(err["input"], dict | list) and repr(err["input"]) not in msg:
        msg += f", got {err['input']!r}"
    return msg


def _locate(file: str, positions: dict[Loc, tuple[int, int]], keys: dict[Loc, tuple[int, int]], loc: Loc,
            message: str, prefer_key: bool = False) -> Problem:
    probe = loc
    while probe and probe not in positions:
        probe = probe[:-1]
    pos = (keys.get(probe) if prefer_key else None) or positions.get(probe)
    env = "COLLECTOR_" + "__".join(str(p).upper() for p in loc)
    if loc and env in os.environ:
        message += f" (value from environment variable {env})"
    return Problem(file, pos[0] if pos else None, pos[1] if pos else None, format_path(loc), message)


# -- the entry point -----------------------------------------------------------------------------

def load_or_report(path: Path) -> LoadedConfig | None:
    """For commands: the loaded config, or None after printing every problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"invalid config {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def load_config(path: Path | str) -> LoadedConfig:
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([Problem(file, None, None, "", f"cannot read config: {exc.strerror}")]) from exc
    return load_config_text(text, file, base_dir=path.resolve().parent)


def load_config_text(text: str, file: str = "<config>", base_dir: Path | None = None) -> LoadedConfig:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError([Problem(file, mark.line + 1 if mark else None, mark.column + 1 if mark else None,
                                   "", f"YAML syntax error: {what}")]) from exc
    positions: dict[Loc, tuple[int, int]] = {}
    keys: dict[Loc, tuple[int, int]] = {}
    if node is not None:
        _positions(node, (), positions, keys)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, 1, "", "expected a mapping with `site`, `sources`, `machines`...")])

    subst_problems: list[tuple[Loc, str]] = []
    data = _substitute(data, (), subst_problems)
    if subst_problems:
        raise ConfigError([_locate(file, positions, keys, loc, msg) for loc, msg in subst_problems])

    try:
        config = Config(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            clean = _walk_data(data, err["loc"])
            if not err["loc"] or (err["type"] == "value_error" and clean == ()):
                for line in str(err["ctx"]["error"] if "ctx" in err else err["msg"]).splitlines():
                    target, _, message = line.partition(": ")
                    problems.append(_locate(file, positions, keys, _parse_path(target), message or line))
                continue
            problems.append(_locate(file, positions, keys, clean, _message(err, data, clean),
                                    prefer_key=err["type"] == "extra_forbidden"))
        raise ConfigError(problems) from exc

    if base_dir is not None and not config.data_dir.is_absolute():
        config.data_dir = base_dir / config.data_dir
    if base_dir is not None and not config.outbox.path.is_absolute():
        config.outbox.path = base_dir / config.outbox.path
    try:
        machines = resolve_all(config)
    except ResolveError as exc:
        raise ConfigError([_locate(file, positions, keys, _parse_path(exc.path), str(exc))]) from exc
    return LoadedConfig(config, machines, Path(file))
