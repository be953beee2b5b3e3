"""Settings shared by every issue: branding and the public web address.

Precedence, highest first: values passed in code (CLI flags), environment variables
(MAILER_*, nested with __), the .env file, the config file (mailer.toml), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mailer.errors import ConfigError
from mailer.urls import Url

CONFIG_ENV = "MAILER_CONFIG"
DEFAULT_CONFIG = Path("mailer.toml")
HexColour = str


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Logo(_Config):
    src: Url
    alt: str = Field(min_length=1)
    width: int = Field(180, ge=16, le=600)


class Colours(_Config):
    primary: HexColour = Field("#0b5394", pattern=r"^#[0-9a-fA-F]{6}$")
    accent: HexColour = Field("#e69138", pattern=r"^#[0-9a-fA-F]{6}$")
    text: HexColour = Field("#222222", pattern=r"^#[0-9a-fA-F]{6}$")
    muted: HexColour = Field("#666666", pattern=r"^#[0-9a-fA-F]{6}$")
    background: HexColour = Field("#f2f2f2", pattern=r"^#[0-9a-fA-F]{6}$")
    content: HexColour = Field("#ffffff", pattern=r"^#[0-9a-fA-F]{6}$")


class SocialAccount(_Config):
    label: str = Field(min_length=1, description='Shown as the icon\'s alt text, e.g. "ICMPD on Twitter".')
    url: Url
    icon: Url


class Branding(_Config):
    name: str = Field("Newsletter", min_length=1, description="Short organisation name.")
    full_name: str | None = None
    website: Url | None = None
    logo: Logo | None = None
    colours: Colours = Colours()
    font_family: str = "Arial, Helvetica, sans-serif"
    address: list[str] = Field(default_factory=list, description="Postal address lines for the footer.")
    social: list[SocialAccount] = Field(default_factory=list)
    links_heading: str = "Connect with us"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        toml_file=DEFAULT_CONFIG,
    )

    public_url: Url = Field(
        description="Base URL of the public web version; issue 2016-02 is published at <public_url>/2016-02/."
    )
    branding: Branding = Branding()
    templates_dir: Path | None = Field(None, description="A folder of templates replacing the built-in ones.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, TomlConfigSettingsSource(settings_cls))

    def web_url(self, slug: str) -> str:
        return f"{self.public_url.rstrip('/')}/{slug}/"


def config_path(explicit: Path | None = None) -> Path:
    return explicit or Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build the one Settings object; `overrides` are CLI flags that were actually given."""
    path = config_path(config_file)
    if config_file is not None and not path.is_file():
        raise ConfigError(f"{path}: no such config file")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return _FromFile(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_url=False):
            field = ".".join(str(part) for part in detail["loc"])
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] == "missing":
                message = f"required; set it in {path} or MAILER_{field.upper().replace('.', '__')}"
            problems.append(f"{path}: {field}: {message}")
        raise ConfigError("\n".join(problems)) from None
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
