"""Read an issue file and validate it, reporting every problem with its line and column."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from mailer.compose.input_file import read_input
from mailer.compose.model import Issue
from mailer.errors import IssueFileError, Problem

MAX_NODES = 20_000
"""Far more than any newsletter needs; stops alias bombs ("billion laughs") before they expand."""
MAX_DEPTH = 32

Loc = tuple[int | str, ...]


class _Constructor(RoundTripConstructor):
    """Leave timestamps as text so pydantic reports a bad date like any other bad value."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


@dataclass
class _Document:
    """Plain data with the position of every value and key, 1-based."""

    data: Any
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)


class _TooLarge(Exception):
    def __init__(self, loc: Loc, reason: str) -> None:
        self.loc = loc
        self.reason = reason


def _plain(node: Any, loc: Loc, doc: _Document, budget: list[int]) -> Any:
    """Copy ruamel's tree to plain dicts and lists, counting every node an alias expands to."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge(loc, f"more than {MAX_NODES} values (an alias expanding too far?)")
    if len(loc) > MAX_DEPTH:
        raise _TooLarge(loc, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, CommentedMap):
        result: dict[Any, Any] = {}
        for key, value in node.items():
            child = (*loc, str(key))
            key_line, key_col = node.lc.key(key)
            value_line, value_col = node.lc.value(key)
            doc.keys[child] = (key_line + 1, key_col + 1)
            doc.values[child] = (value_line + 1, value_col + 1)
            result[str(key)] = _plain(value, child, doc, budget)
        return result
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            doc.values[(*loc, index)] = (line + 1, col + 1)
            items.append(_plain(value, (*loc, index), doc, budget))
        return items
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _parse(text: str, path: str) -> _Document:
    try:
        tree = _yaml().load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (error.problem or error.context or "invalid YAML").strip()
        if problem.startswith("but ") and error.context:
            problem = f"{error.context.strip()} {problem}"
        if "duplicate key" in problem:
            problem = problem.split(" with value")[0]
        raise IssueFileError([Problem(path, line, col, "", f"YAML: {problem}")]) from None
    except YAMLError as error:
        raise IssueFileError([Problem(path, 1, 1, "", f"YAML: {error}")]) from None
    except RecursionError:
        raise IssueFileError([Problem(path, 1, 1, "", "YAML: nested too deeply")]) from None
    if tree is None:
        raise IssueFileError([Problem(path, 1, 1, "", "the file is empty; an issue needs title, date and preheader")])
    if not isinstance(tree, CommentedMap):
        line = tree.lc.line + 1 if hasattr(tree, "lc") else 1
        kind = "a list" if isinstance(tree, CommentedSeq) else "a single value"
        raise IssueFileError(
            [
                Problem(
                    path,
                    line,
                    1,
                    "",
                    f"the document is {kind}; an issue is a mapping of fields (title: ..., date: ...)",
                )
            ]
        )
    doc = _Document(data=None)
    try:
        doc.data = _plain(tree, (), doc, [MAX_NODES])
    except _TooLarge as error:
        line, col = doc.values.get(error.loc, (1, 1))
        raise IssueFileError([Problem(path, line, col, format_loc(error.loc), error.reason)]) from None
    return doc


def format_loc(loc: Loc) -> str:
    """('news', 'stories', 2, 'url') -> 'news.stories[2].url'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_types(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _model_types(typing.get_args(annotation)[0])
    elif origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _model_types(arg)


def _fields_at(loc: Loc) -> list[str]:
    """The field names the model accepts at the mapping that holds `loc`."""
    model: type[BaseModel] = Issue
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        found = next(_model_types(info.annotation), None) if info else None
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def _position(doc: _Document, loc: Loc, *, key: bool = False) -> tuple[int, int]:
    if key and loc in doc.keys:
        return doc.keys[loc]
    for end in range(len(loc), 0, -1):
        if loc[:end] in doc.values:
            if end < len(loc) and loc[:end] in doc.keys:
                return doc.keys[loc[:end]]
            return doc.values[loc[:end]]
    return (1, 1)


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        known = _fields_at(loc)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        suffix = f"; did you mean '{hint[0]}'?" if hint else f"; known fields: {', '.join(known)}"
        return f"unknown field{suffix}"
    message = error["msg"].removeprefix("Value error, ")
    if kind in ("string_type", "date_type", "date_from_datetime_parsing", "date_parsing", "list_type", "model_type"):
        message += f", got {error['input']!r}"
    return message


def _problems(error: ValidationError, doc: _Document, path: str) -> list[Problem]:
    problems = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        line, col = _position(doc, loc, key=detail["type"] == "extra_forbidden")
        problems.append(Problem(path, line, col, format_loc(loc), _message(detail, loc)))
    return sorted(problems, key=lambda p: (p.line, p.column, p.field))


def parse_issue(text: str, path: str) -> Issue:
    doc = _parse(text, path)
    try:
        return Issue.model_validate(doc.data)
    except ValidationError as error:
        raise IssueFileError(_problems(error, doc, path)) from None


def load_issue(path: Path) -> Issue:
    """Load and validate one issue file; every problem in it is reported at once."""
    raw = read_input(path, what="an issue file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise IssueFileError([Problem(str(path), line, 1, "", "not UTF-8 text; save the file as UTF-8")]) from None
    return parse_issue(text, str(path))
