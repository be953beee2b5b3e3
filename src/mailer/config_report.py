"""Every effective setting with where it came from, so "which value wins?" has an answer; secrets stay hidden."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource, TomlConfigSettingsSource

from mailer.settings import MASK, Settings, config_path, load_settings, mask_url_password

Key = tuple[str, ...]


def describe_settings(config_file: Path | None = None, **overrides: object) -> list[str]:
    """One line per effective setting, `name = value  (source)`, in the order the fields are declared."""
    settings = load_settings(config_file, **overrides)
    settings_cls = type(settings)
    env = EnvSettingsSource(settings_cls)
    sources: list[tuple[str, Mapping[str, Any], EnvSettingsSource | None]] = [
        ("flag", overrides, None),
        ("environment", env(), env),
        (".env", DotEnvSettingsSource(settings_cls)(), None),
        (str(config_path(config_file)), TomlConfigSettingsSource(settings_cls)(), None),
    ]
    lines = []
    for key, value, field in _leaves(settings):
        source = "default"
        for label, data, env_source in sources:
            if _provides(data, key):
                source = f"{label} ({_env_name(env_source, key)})" if env_source else label
                break
        lines.append(f"{'.'.join(key)} = {_show(key, value, field, settings)}  ({source})")
    return lines


def _leaves(model: BaseModel, prefix: Key = ()) -> Iterator[tuple[Key, Any, FieldInfo]]:
    """Dotted keys down to scalars; lists and unset optional models are one value each."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, (*prefix, name))
        else:
            yield (*prefix, name), value, field


def _provides(data: object, key: Key) -> bool:
    for part in key:
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True


def _env_name(source: EnvSettingsSource, key: Key) -> str:
    """The variable that set `key`: MAILER_BRANDING__NAME, or MAILER_BRANDING when it holds the whole table as JSON."""
    delimiter = source.env_nested_delimiter or "__"
    for length in range(len(key), 0, -1):
        name = source.env_prefix + delimiter.join(key[:length])
        if (name if source.case_sensitive else name.lower()) in source.env_vars:
            return name.upper()
    return (source.env_prefix + delimiter.join(key)).upper()


def _show(key: Key, value: Any, field: FieldInfo, settings: Settings) -> str:
    if isinstance(value, SecretStr) or SecretStr in (field.annotation, *get_args(field.annotation)):
        return "(not set)" if value is None else MASK
    if key == ("smtp_port",) and value is None:
        value = settings.smtp_port_effective
    if key == ("database_url",):
        value = mask_url_password(value)
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)
