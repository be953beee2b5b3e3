"""Read an issue file and validate it, reporting every problem with its line and column."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, StreamMark, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from mailer.compose.input_file import read_input
from mailer.compose.model import Issue
from mailer.compose.placeholders import Slip, parse_greeting, stray_placeholders
from mailer.errors import IssueFileError, Problem

MAX_NODES = 20_000
"""Far more than any newsletter needs; stops alias bombs ("billion laughs") before they expand."""
MAX_DEPTH = 32
MAX_ISSUE_BYTES = 1_000_000
"""The default of the max_issue_bytes setting: a newsletter is a few KB; a bigger file is refused unread."""

NOT_IN_EMAIL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 forbids, exactly the ones MJML (mjml-python) refuses: checked here so check passing means render passes."""

Loc = tuple[int | str, ...]

_LINE_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
"""What ruamel.yaml counts as a line break, so source lines match its line numbers."""
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
"""Digits after a double-quoted scalar's \\x, \\u and \\U escapes."""


class _Constructor(RoundTripConstructor):
    """Leave timestamps as text so pydantic reports a bad date like any other bad value."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


class _TagRefused(Exception):
    def __init__(self, mark: StreamMark, tag: str) -> None:
        self.mark = mark
        self.tag = tag


class _Composer(Composer):
    """Refuse explicit tags (!!python/object/apply:..., !custom, even !!str): an issue is plain data."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        tag = getattr(event, "ctag", None)
        if tag is not None and not isinstance(event, AliasEvent):
            written = (
                f"{tag.handle}{tag.suffix}" if tag.handle else (tag.suffix if tag.suffix == "!" else f"!<{tag.suffix}>")
            )
            raise _TagRefused(event.start_mark, written)
        return super().compose_node(parent, index)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Composer = _Composer
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


@dataclass
class _Document:
    """Plain data with the position of every value and key, 1-based."""

    data: Any
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    unusable: list[tuple[Loc, bool, str]] = field(default_factory=list)
    """(loc, in the key?, character) for text holding a character email HTML cannot carry."""
    lines: list[str] = field(default_factory=list)
    """The source, for the column of a place inside a value."""


class _TooLarge(Exception):
    def __init__(self, loc: Loc, reason: str) -> None:
        self.loc = loc
        self.reason = reason


def _written_in(node: CommentedMap, key: Any) -> CommentedMap:
    """The mapping where `key` is written: `node` itself, or one merged into it with `<<: *anchor`."""
    if not isinstance(node, CommentedMap) or node.lc.data is None or key in node.lc.data:
        return node
    for item in node.merge:
        merged = item[1] if isinstance(item, tuple) else item  # (index, map) in ruamel.yaml before 0.18.7
        if key in merged:
            return _written_in(merged, key)
    return node


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
            source = _written_in(node, key)
            here = (source.lc.line or 0, source.lc.col or 0)  # ruamel keeps no per-key place for some merged maps
            key_line, key_col = source.lc.key(key) or here
            value_line, value_col = source.lc.value(key) or here
            if found := NOT_IN_EMAIL.search(str(key)):
                doc.unusable.append((child, True, found.group()))
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
        if found := NOT_IN_EMAIL.search(node):
            doc.unusable.append((loc, False, found.group()))
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
    except _TagRefused as error:
        line, col = error.mark.line + 1, error.mark.column + 1
        message = f"YAML tags such as {error.tag} are not allowed; write the plain value (in quotes if it is text)"
        raise IssueFileError([Problem(path, line, col, "", message)]) from None
    except ReaderError as error:
        before = text[: error.position]
        line, col = before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1
        what = _character(chr(error.character)) if isinstance(error.character, int) else "this character"
        raise IssueFileError(
            [Problem(path, line, col, "", f"YAML: {what} is not allowed in a YAML file; remove it")]
        ) from None
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
    doc = _Document(data=None, lines=_LINE_BREAK.split(text))
    try:
        doc.data = _plain(tree, (), doc, [MAX_NODES])
    except _TooLarge as error:
        line, col = doc.values.get(error.loc, (1, 1))
        raise IssueFileError([Problem(path, line, col, format_loc(error.loc), error.reason)]) from None
    return doc


def _character(char: str) -> str:
    """'U+001B (a control character)': how messages name a character nobody can see."""
    code = ord(char)
    kind = (
        "a lone surrogate"
        if 0xD800 <= code <= 0xDFFF
        else ("a noncharacter" if code >= 0xFFFE else "a control character")
    )
    return f"U+{code:04X} ({kind})"


def _unusable(doc: _Document, path: str) -> list[Problem]:
    return [
        Problem(
            path,
            *_position(doc, loc, key=in_key),
            format_loc(loc),
            f"{_character(char)} cannot be sent in an email; remove it" + (" from the field name" if in_key else ""),
        )
        for loc, in_key, char in doc.unusable
    ]


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


def _written_at(source: str, value: str) -> list[int] | None:
    """Where each character of `value` is written in `source` (its line, from the value on): for a plain or
    quoted scalar on one line; None when the value is written otherwise (block, several lines, an alias)."""
    quote = source[:1]
    if quote not in ("'", '"'):
        return list(range(len(value))) if source.startswith(value) else None
    offsets: list[int] = []
    i = 1
    while i < len(source):
        char = source[i]
        if char == quote and not (quote == "'" and source.startswith("''", i)):
            return offsets if len(offsets) == len(value) else None
        if len(offsets) == len(value):
            return None
        offsets.append(i)
        if quote == '"' and char == "\\":
            i += 2 + _HEX_DIGITS.get(source[i + 1 : i + 2], 0)
            continue
        if value[len(offsets) - 1] != char:
            return None
        i += 2 if char == "'" else 1
    return None


def _inside(doc: _Document, loc: Loc, value: str, offset: int) -> tuple[int, int]:
    """The line and column of `value[offset]` where it can be known, else of the value."""
    line, col = _position(doc, loc)
    source = doc.lines[line - 1][col - 1 :] if line <= len(doc.lines) else ""
    offsets = _written_at(source, value)
    return (line, col + offsets[offset]) if offsets is not None and offset < len(offsets) else (line, col)


def _strings(data: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _strings(value, (*loc, index))
    elif isinstance(data, str):
        yield loc, data


def _placeholders(doc: _Document, path: str) -> list[Problem]:
    """Placeholders that cannot be filled in: mistakes in the greeting's, and any elsewhere, at the place they are written."""
    problems = []
    for loc, value in _strings(doc.data, ()):
        slips: list[Slip] = parse_greeting(value)[1] if loc == ("greeting",) else stray_placeholders(value)
        problems += [
            Problem(path, *_inside(doc, loc, value, slip.offset), format_loc(loc), slip.message) for slip in slips
        ]
    return problems


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


def _problems(details: list[ErrorDetails], doc: _Document, path: str) -> list[Problem]:
    problems = []
    for detail in details:
        loc = tuple(detail["loc"])
        line, col = _position(doc, loc, key=detail["type"] == "extra_forbidden")
        problems.append(Problem(path, line, col, format_loc(loc), _message(detail, loc)))
    return sorted(problems, key=lambda p: (p.line, p.column, p.field))


@dataclass(frozen=True)
class PlacedIssue:
    """A valid issue with the place of every value it was read from: for checks made after validation (links)."""

    issue: Issue
    path: str
    _doc: _Document

    def strings(self) -> Iterator[tuple[Loc, str]]:
        """Every text value as written (before trimming), with its field path."""
        return _strings(self._doc.data, ())

    def problem(self, loc: Loc, message: str, *, value: str = "", offset: int | None = None) -> Problem:
        """`file:line:col: field: message` at the value of `loc`, or at `value[offset]` inside it."""
        line, col = _position(self._doc, loc) if offset is None else _inside(self._doc, loc, value, offset)
        return Problem(self.path, line, col, format_loc(loc), message)


def field_at(loc: Loc) -> FieldInfo | None:
    """The model field that holds the value at `loc` (a list item: the list's field)."""
    names = [part for part in loc if isinstance(part, str)]
    model: type[BaseModel] | None = Issue
    info = None
    for name in names:
        info = model.model_fields.get(name) if model else None
        if info is None:
            return None
        model = next(_model_types(info.annotation), None)
    return info


def parse_issue(text: str, path: str) -> Issue:
    return parse_placed_issue(text, path).issue


def parse_placed_issue(text: str, path: str) -> PlacedIssue:
    doc = _parse(text, path)
    problems = _unusable(doc, path)
    reported = {problem.field for problem in problems}
    placeholders = [problem for problem in _placeholders(doc, path) if problem.field not in reported]
    placed = {problem.field for problem in placeholders}
    try:
        issue = Issue.model_validate(doc.data, context={"issue_dir": Path(path).parent})  # local images beside it
    except ValidationError as error:
        details = [
            detail
            for detail in error.errors(include_url=False)
            if not (detail["type"] == "value_error" and format_loc(tuple(detail["loc"])) in placed)
        ]  # the greeting's check, reported above with the placeholder's own column
        problems += [problem for problem in _problems(details, doc, path) if problem.field not in reported]
    reported = {problem.field for problem in problems}
    problems += [problem for problem in placeholders if problem.field not in reported]
    if problems:
        raise IssueFileError(sorted(problems, key=lambda p: (p.line, p.column, p.field)))
    return PlacedIssue(issue, path, doc)


def load_issue(path: Path, *, max_bytes: int = MAX_ISSUE_BYTES) -> Issue:
    """Load and validate one issue file; every problem in it is reported at once.

    A file over `max_bytes` (the max_issue_bytes setting) is refused before it is parsed.
    """
    return load_placed_issue(path, max_bytes=max_bytes).issue


def load_placed_issue(path: Path, *, max_bytes: int = MAX_ISSUE_BYTES) -> PlacedIssue:
    """load_issue, keeping the place of every value for checks that report where a value is written."""
    raw = read_input(path, what="an issue file", max_bytes=max_bytes, setting="max_issue_bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise IssueFileError([Problem(str(path), line, 1, "", "not UTF-8 text; save the file as UTF-8")]) from None
    return parse_placed_issue(text, str(path))
