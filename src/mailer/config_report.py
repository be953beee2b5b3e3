"""Every effective setting with where it came from, so "which value wins?" has an answer; secrets stay hidden."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from mailer.settings import MASK, Settings, load_settings_and_sources, mask_passwords_in

Key = tuple[str, ...]


def describe_settings(config_file: Path | None = None, **overrides: object) -> list[str]:
    """One line per effective setting, `name = value  (source)`, in the order the fields are declared."""
    settings, sources = load_settings_and_sources(config_file, **overrides)
    lines = []
    for key, value, field in _leaves(settings):
        origin = sources.origin(key)
        source = origin.label() if origin else "default"
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


def _show(key: Key, value: Any, field: FieldInfo, settings: Settings) -> str:
    if isinstance(value, SecretStr) or SecretStr in (field.annotation, *get_args(field.annotation)):
        return "(not set)" if value is None else MASK
    if key == ("smtp_port",) and value is None:
        value = settings.smtp_port_effective
    return json.dumps(mask_passwords_in(to_jsonable_python(value)), ensure_ascii=False)
