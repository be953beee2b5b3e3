"""Where each setting came from: the environment, `.env` and the config file, read with their places.

pydantic-settings merges its sources and forgets where a value was written. These sources keep, for every
key, the variable, the `.env` line or the config file line that set it, so a bad value is reported where it
can be fixed and `mailer config` can say which layer won. A MAILER_* variable or a config key that is no
setting is an error with the nearest known name: a typo must not silently leave the default in force.
"""

from __future__ import annotations

import copy
import difflib
import io
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, TomlConfigSettingsSource

from mailer.errors import ConfigError
from mailer.toml_lines import Key, toml_key_lines

Kind = Literal["flag", "environment", ".env", "file"]
RANKS: dict[str, int] = {"environment": 0, ".env": 1, "file": 2}  # the order problems are listed in
SHOWN_VALUE_LIMIT = 80
MASK = "********"
BOM = "\ufeff"  # Windows editors start UTF-8 files with it
BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"})
KNOWN_LIST_LIMIT = 12
JSON_HINT = 'lists and tables are written as JSON here, e.g. ["a", "b"] or {"name": "x"}'


@dataclass(frozen=True)
class Origin:
    """One place a value was set: a flag, a variable, a line of `.env` or a line of the config file."""

    kind: Kind
    source: str  # "flag", "environment", or the path of .env or of the config file
    key: Key = ()  # the setting or table written there
    name: str = ""  # the variable, as written
    line: int = 0
    shown: str | None = None  # the variable's value, when it is safe to repeat

    def label(self) -> str:
        """The source as `mailer config` names it."""
        return f"environment ({self.name})" if self.kind == "environment" else self.source

    def at(self, *, value: bool = False) -> str:
        """`MAILER_SMTP_PORT` (`=abc` with `value`), `.env:3: MAILER_SMTP_PORT`, `mailer.toml:7`."""
        if self.kind == "environment":
            return f"{self.name}={self.shown}" if value and self.shown is not None else self.name
        if self.kind == ".env":
            return f"{self.source}:{self.line}: {self.name}"
        return f"{self.source}:{self.line}" if self.line else self.source

    def problem(self, loc: Key, message: str) -> str:
        """One line: where to fix it, the setting (unless the variable names just that one), what is wrong."""
        if self.kind == ".env" and loc == self.key:
            return f"{self.at()}: {message}"
        return f"{self.at(value=loc == self.key)}: {dotted(loc)}: {message}"


def dotted(loc: Key) -> str:
    """`branding.social[0].url`, as issue file errors name fields."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


class SettingsSources:
    """The layers one Settings object is built from, with the place of every value they hold."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *,
        config: Path,
        overrides: Mapping[str, object],
        reserved: Collection[str] = (),
        mask: Callable[[str], str] = str,
    ) -> None:
        """`reserved`: MAILER_* variables that are not settings (MAILER_CONFIG); `mask` hides URL passwords in text shown."""
        self.settings_cls = settings_cls
        self.config = config
        self.overrides = overrides
        self.mask = mask
        env_file = settings_cls.model_config.get("env_file")
        dotenv = Path(env_file) if isinstance(env_file, str | os.PathLike) else None
        encoding = settings_cls.model_config.get("env_file_encoding") or "utf-8"
        common: dict[str, Any] = {"reserved": {name.upper() for name in reserved}, "mask": mask}
        self.environment = VariablesSource(
            settings_cls, kind="environment", source="environment", variables=_environment(), **common
        )
        self.dotenv = VariablesSource(
            settings_cls,
            kind=".env",
            source=str(dotenv),
            variables=read_dotenv(dotenv, encoding) if dotenv and dotenv.is_file() else [],
            **common,
        )
        self.file = TomlSource(settings_cls, config)

    @property
    def layers(self) -> tuple[PydanticBaseSettingsSource, ...]:
        """Below the flags, highest precedence first, for settings_customise_sources."""
        return (self.environment, self.dotenv, self.file)

    def origin(self, key: Key, *, nearest: bool = False) -> Origin | None:
        """The place whose value for `key` won; None for a default.

        `nearest`: for a key nobody set (a required field, an unknown name inside a value), the place of
        the closest enclosing table that was set.
        """
        for length in range(len(key), 0, -1) if nearest else (len(key),):
            part = key[:length]
            if _contains(self.overrides, part):
                return Origin("flag", "flag", part)
            for source in (self.environment, self.dotenv, self.file):
                if _contains(source.data, part):
                    return source.place(part)
        return None

    def problems(self, error: ValidationError | None) -> list[str]:
        """Every problem with the settings, one line each: unknown variables, then the values pydantic refused."""
        found = [*self.environment.problems, *self.dotenv.problems]
        for detail in error.errors(include_url=False) if error else []:
            loc, value = tuple(detail["loc"]), detail["input"]
            message = self._hidden(self._message(detail["type"], detail["msg"], loc, value), loc, value)
            origin = self.origin(loc, nearest=True)
            if origin is None or origin.kind == "flag":
                where = f"{self.config}: {dotted(loc)}" if loc else str(self.config)
                found.append((len(RANKS), 0, f"{where}: {message}"))
            else:
                found.append((RANKS[origin.kind], origin.line, origin.problem(loc, message)))
        return [text for *_, text in sorted(found)]

    def _message(self, kind: str, message: str, loc: Key, value: object) -> str:
        if kind == "extra_forbidden":
            return unknown_key_message(self.settings_cls, loc, value)
        field = field_at(self.settings_cls, loc)
        if kind in BOUND_ERRORS and field is not None and (bounds := range_of(field)):
            return f"Input should be {bounds}"
        if kind == "missing" and any(isinstance(part, int) for part in loc):
            return "required"  # an item of a list: no variable names it alone
        if kind == "missing":
            prefix = self.settings_cls.model_config.get("env_prefix", "")
            variable = prefix + "__".join(str(part) for part in loc).upper()
            return f"required; set it in {self.config} or {variable}"
        return message.removeprefix("Value error, ")

    def _hidden(self, message: str, loc: Key, value: object) -> str:
        """The message with a secret's value, and the password of any URL, replaced by ********.

        Validators may quote the value they refuse (`got 'ftp://u:pw@x.org'`); the value is masked whole
        first (a password may hold spaces), then every word of the message on its own. A secret is
        replaced only where it is quoted: a short one must not garble the rest of the message.
        """
        field = field_at(self.settings_cls, loc)
        secret = field is not None and _is_secret(field.annotation)
        for text in filter(None, _strings_in(value)):
            hidden = MASK if secret else self.mask(text)
            if hidden != text:
                message = message.replace(repr(text), repr(hidden))
                message = message if secret else message.replace(text, hidden)
        return re.sub(r"\S+", lambda word: self.mask(word[0]), message)


class VariablesSource(EnvSettingsSource):
    """The MAILER_* variables of the environment or of `.env`; others (PATH, DATABASE_PASSWORD...) are not ours.

    Values are read exactly as pydantic-settings reads the environment (JSON for lists and tables, `__`
    for nesting); only the selection of variables and the record of their places are added here.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *,
        kind: Literal["environment", ".env"],
        source: str,
        variables: Iterable[tuple[str, str | None, int]],
        reserved: Collection[str],
        mask: Callable[[str], str],
    ) -> None:
        """`variables`: (name as written, value, line) for every variable of the place."""
        self.kind: Literal["environment", ".env"] = kind
        self.source = source
        prefix = str(settings_cls.model_config.get("env_prefix", "")).upper()
        self.variables = [v for v in variables if v[0].upper().startswith(prefix) and v[0].upper() not in reserved]
        super().__init__(settings_cls)
        self.places: dict[Key, Origin] = {}
        self.problems: list[tuple[int, int, str]] = []
        self._unknown: list[Key] = []
        self._data: dict[str, Any] | None = None
        known = known_settings(settings_cls)
        delimiter = self.env_nested_delimiter or "__"
        for name, value, line in self.variables:
            key: Key = tuple(name[len(prefix) :].lower().split(delimiter))
            field = known.get(key)
            if field is None:
                self._unknown.append(key)
                origin = Origin(kind, source, key, name, line)
                message = unknown_variable_message(settings_cls, key, environment=kind == "environment")
                self.problems.append((RANKS[kind], line, f"{origin.at()}: {message}"))
                continue
            shown = None if kind == ".env" or value is None or _is_secret(field.annotation) else _shown(mask(value))
            self.places[key] = Origin(kind, source, key, name, line, shown)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value, _ in self.variables}

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        """A list or table that is not JSON is a problem at its variable, not a traceback."""
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as error:
            origin = self.place((field_name,))
            message = origin.problem((field_name,), f"not valid JSON ({error}); {JSON_HINT}")
            self.problems.append((RANKS[self.kind], origin.line, message))
            return None

    def __call__(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    @property
    def data(self) -> dict[str, Any]:
        """What this layer sets, read once; unknown names left out (they are reported instead)."""
        if self._data is None:
            data = super().__call__()
            for key in self._unknown:
                _discard(data, key)
            self._data = data
        return self._data

    def place(self, key: Key) -> Origin:
        return _nearest(self.places, key) or Origin(self.kind, self.source)


class TomlSource(TomlConfigSettingsSource):
    """The config file, with the line of every key, table and array element."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        self.places: dict[Key, Origin] = {}
        self._fields = settings_cls.model_fields  # _read_file runs inside super().__init__
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            text = file_path.read_text(encoding="utf-8").removeprefix(BOM)
        except UnicodeDecodeError as error:
            raise ConfigError(f"{self.path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except OSError as error:
            raise ConfigError(f"{self.path}: cannot be read ({error.strerror})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            at = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(error))
            raise ConfigError(f"{self.path}:{at[2]}:{at[3]}: {at[1]}" if at else f"{self.path}: {error}") from None
        for key, line in toml_key_lines(text).items():
            first = key[0]
            if isinstance(first, str) and first not in self._fields and first.lower() in self._fields:
                key = (first.lower(), *key[1:])  # pydantic-settings matches top-level names in any case
            self.places[key] = Origin("file", str(self.path), key, line=line)
        return data

    @property
    def data(self) -> dict[str, Any]:
        return self.init_kwargs

    def place(self, key: Key) -> Origin:
        return _nearest(self.places, key) or Origin("file", str(self.path))


def _nearest(places: Mapping[Key, Origin], key: Key) -> Origin | None:
    """The place of `key`, else of the closest table around it (a whole table set as JSON, a table header)."""
    return next((places[key[:n]] for n in range(len(key), 0, -1) if key[:n] in places), None)


def known_settings(model: type[BaseModel], prefix: Key = ()) -> dict[Key, FieldInfo]:
    """Every setting a variable can name, tables included: (smtp_port,), (branding,), (branding, colours, primary)..."""
    known: dict[Key, FieldInfo] = {}
    for name, field in model.model_fields.items():
        known[(*prefix, name)] = field
        nested = _model_in(field.annotation, through_lists=False)
        if nested is not None:
            known.update(known_settings(nested, (*prefix, name)))
    return known


def names_at(model: type[BaseModel], loc: Key) -> list[str]:
    """The setting names of the table that holds `loc` (as far as the path is known)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        nested = _model_in(field.annotation, through_lists=True) if field else None
        if nested is None:
            break
        model = nested
    return list(model.model_fields)


def field_at(model: type[BaseModel], loc: Key) -> FieldInfo | None:
    """The field `loc` names (list indexes stepped over); None past a name no model knows."""
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        nested = _model_in(field.annotation, through_lists=True) if field else model
        field = nested.model_fields.get(part) if nested else None
        if field is None:
            return None
    return field


def range_of(field: FieldInfo) -> str | None:
    """`from 5 to 3600`, `greater than 0 and at most 600`: the bounds of a number field, when it has both."""
    low = next((bound for bound in field.metadata if isinstance(bound, annotated_types.Ge | annotated_types.Gt)), None)
    high = next((bound.le for bound in field.metadata if isinstance(bound, annotated_types.Le)), None)
    if low is None or high is None:
        return None
    if isinstance(low, annotated_types.Ge):
        return f"from {low.ge} to {high}"
    return f"greater than {low.gt} and at most {high}"


def unknown_key_message(model: type[BaseModel], loc: Key, value: object = None) -> str:
    """With the nearest name; a dotted key is compared as one name (`smtp.port` → smtp_port), a quoted one as a path."""
    known = names_at(model, loc)
    if not loc:
        return f"unknown setting; {_known_list(known)}"
    name = str(loc[-1])
    parts = tuple(name.split("."))
    if len(parts) > 1 and (*loc[:-1], *parts) in known_settings(model):
        return f"unknown setting; did you mean {name}, without the quotes?"
    written = [f"{name}_{path}" for path in _leaf_paths(value)] if isinstance(value, Mapping) and value else [name]
    joined = [difflib.get_close_matches(text.replace(".", "_"), known, n=1, cutoff=0.8) for text in written]
    hints = list(dict.fromkeys(hint[0] for hint in joined if hint)) if all(joined) else []
    hints = hints or difflib.get_close_matches(name, known, n=1)
    if not hints:
        return f"unknown setting; {_known_list(known)}"
    return f"unknown setting; did you mean {' or '.join(repr(hint) for hint in hints)}?"


def _leaf_paths(table: Mapping[Any, Any]) -> list[str]:
    """`{"port": 1, "tls": {"mode": "x"}}` → port, tls.mode: the names written under a table, dotted."""
    paths: list[str] = []
    for key, item in table.items():
        below = _leaf_paths(item) if isinstance(item, Mapping) else []
        paths += [f"{key}.{path}" for path in below] if below else [str(key)]
    return paths


def unknown_variable_message(settings_cls: type[BaseSettings], key: Key, *, environment: bool) -> str:
    """With the nearest name; a name like no setting may belong to another program, when it is in the environment."""
    prefix = str(settings_cls.model_config.get("env_prefix", "")).upper()
    known = known_settings(settings_cls)
    parent = key[:-1]
    table = _model_in(known[parent].annotation, through_lists=False) if parent in known else None
    if not parent or table:  # a typo in the last name: compare it with its neighbours only
        candidates = {str(name).upper(): (*parent, name) for name in names_at(settings_cls, key)}
        typed = str(key[-1]).upper()
    else:
        candidates = {"__".join(map(str, setting)).upper(): setting for setting in known}
        typed = "__".join(map(str, key)).upper()
    hint = difflib.get_close_matches(typed, candidates, n=1)
    if hint:
        return f"unknown setting; did you mean {prefix}{'__'.join(map(str, candidates[hint[0]])).upper()}?"
    message = f"unknown setting; {_known_list(names_at(settings_cls, key))}"
    return f"{message}; unset it if another program uses it" if environment and not table else message


def _known_list(names: list[str]) -> str:
    """A table's few names help; the forty top-level ones would drown the message."""
    if len(names) <= KNOWN_LIST_LIMIT:
        return f"known settings: {', '.join(names)}"
    return "no setting has a similar name"


def _model_in(annotation: Any, *, through_lists: bool) -> type[BaseModel] | None:
    """The model a field holds (`Logo | None` → Logo); with `through_lists`, also the model of its items."""
    if get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, tuple, set, frozenset, dict) and not through_lists:
        return None
    for arg in get_args(annotation):
        found = _model_in(arg, through_lists=through_lists)
        if found is not None:
            return found
    return None


def _strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _strings_in(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings_in(item)]
    return []


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


def _shown(value: str) -> str | None:
    """The value as one would type it in a shell; None for what does not fit on a line."""
    return shlex.quote(value) if value.isprintable() and len(value) <= SHOWN_VALUE_LIMIT else None


def _contains(data: object, key: Key) -> bool:
    for part in key:
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if isinstance(part, int) and isinstance(data, list | tuple) and 0 <= part < len(data):
            data = data[part]
            continue
        if isinstance(part, str) and isinstance(data, Mapping) and part in data:
            data = data[part]
            continue
        return False
    return True


def _discard(data: dict[str, Any], key: Key) -> None:
    node: object = data
    for part in key[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(key[-1], None)


def _environment() -> list[tuple[str, str | None, int]]:
    return [(name, value, 0) for name, value in os.environ.items()]


def read_dotenv(path: Path, encoding: str = "utf-8") -> list[tuple[str, str | None, int]]:
    """Every variable of a .env file with the line it starts on, read by python-dotenv as pydantic-settings does."""
    try:
        text = path.read_text(encoding=encoding).removeprefix(BOM)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not {encoding.upper()} text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    lines = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.key:  # python-dotenv counts the blank lines before a variable as part of it
            blank = binding.original.string[: len(binding.original.string) - len(binding.original.string.lstrip())]
            lines[binding.key] = binding.original.line + len(re.findall(r"\r\n|\r|\n", blank))
    return [(name, value, lines.get(name, 0)) for name, value in dotenv_values(stream=io.StringIO(text)).items()]
