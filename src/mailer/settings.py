"""Settings shared by every issue and every send: branding, public web address, database, SMTP, sender.

Precedence, highest first: values passed in code (CLI flags), environment variables
(MAILER_*, nested with __), the .env file, the config file (mailer.toml), defaults.
"""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from collections.abc import Collection, Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import email_validator
from email_validator import EmailNotValidError, EmailSyntaxError, ValidatedEmail, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from mailer.errors import ConfigError
from mailer.settings_sources import MASK as MASK  # shown for secrets and URL passwords alike
from mailer.settings_sources import SettingsSources, read_dotenv
from mailer.urls import Url, check_absolute_url

CONFIG_ENV = "MAILER_CONFIG"
DEFAULT_CONFIG = Path("mailer.toml")
DOTENV = Path(".env")
HexColour = str
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
MIN_SECRET_LENGTH = 32


def _special_use_name(domain: str) -> str | None:
    """The special-use name (RFC 6761: test, local, ...) the domain is or lies under, if any."""
    for name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == name or domain.endswith(f".{name}"):
            return name
    return None


def validate_address(address: str, *, special_use_domains: Collection[str] = ()) -> ValidatedEmail:
    """email-validator's check (no DNS), accepting the special-use domains a deployment lists.

    email-validator refuses special-use domains (`.test`, `.local`...) outright, through a module
    global; rather than changing that list per call, an accepted domain is checked with its
    special-use suffix swapped for a neutral label of the same length, and put back after.
    A refused one names the setting that would accept it.
    """
    try:
        return validate_email(address, check_deliverability=False)
    except EmailNotValidError as error:
        local, at, domain = address.strip().rpartition("@")
        folded = unicodedata.normalize("NFKC", domain).casefold()
        special = _special_use_name(folded) if at else None
        if special is None:
            raise
        stand_in = re.sub(r"[^.]", "x", special)
        result = validate_email(f"{local}@{folded[: -len(special)]}{stand_in}", check_deliverability=False)
        if not any(folded == name or folded.endswith(f".{name}") for name in special_use_domains):
            raise EmailSyntaxError(
                f"{result.domain[: -len(special)]}{special} is a special-use domain; "
                f"add {special!r} to special_use_domains to accept it"
            ) from error
    result.domain = result.domain[: -len(special)] + special
    result.ascii_domain = result.ascii_domain[: -len(special)] + special
    result.normalized = f"{result.local_part}@{result.domain}"
    result.ascii_email = f"{result.local_part}@{result.ascii_domain}" if result.local_part.isascii() else None
    return result


def check_mailbox(value: str, info: ValidationInfo) -> str:
    """One RFC 5322 mailbox, `Name <user@example.org>` or `user@example.org`, safe to put in a header."""
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks (CR or LF)")
    text = value.strip()
    _, address = parseaddr(text)
    if not address or not (text == address or text.endswith(f"<{address}>")):
        raise ValueError(
            f"must be one address like 'Newsletter <news@example.org>' or 'news@example.org', got {value!r}"
        )
    try:
        validate_address(address, special_use_domains=info.data.get("special_use_domains", ()))
    except EmailNotValidError as error:
        raise ValueError(f"{address!r} is not a valid email address: {error}") from None
    return text


def check_secret_length(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_SECRET_LENGTH} characters; make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


_URL_START = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://")


def mask_url_password(text: str) -> str:
    """The text with the password of every URL in it replaced by ********: safe to print or log.

    A password runs from the first colon after `scheme://` to the last `@` of the host part (as urllib
    reads it) or the first `@` after that colon (as SQLAlchemy does: `u:ab/cd@host`), whichever is later;
    a URL neither can parse is masked all the same. Masking too much is the safe way to be wrong.
    """
    shown, done = [], 0
    for start in _URL_START.finditer(text):
        if start.start() < done:
            continue
        authority = start.end()
        colon = text.find(":", authority)
        if colon < 0 or "/" in text[authority:colon]:
            continue
        host_end = min((i for i in map(text.find, "/?#", [colon] * 3) if i >= 0), default=len(text))
        at = max(text.rfind("@", colon, host_end), text.find("@", colon))
        if at > colon:
            shown += [text[done : colon + 1], MASK]
            done = at
    return "".join(shown) + text[done:]


def mask_passwords_in(value: Any) -> Any:
    """`value` with mask_url_password applied to every string in it, through lists, tuples and dicts."""
    if isinstance(value, str):
        return mask_url_password(value)
    if isinstance(value, list | tuple):
        return type(value)(mask_passwords_in(item) for item in value)
    if isinstance(value, dict):
        return {key: mask_passwords_in(item) for key, item in value.items()}
    return value


def check_no_credentials(value: str) -> str:
    """Every email links to these addresses: a user name or password in one would go to every subscriber."""
    if "@" in urlsplit(value).netloc:
        raise ValueError(
            f"must not contain a user name or password (every email links to it), got {mask_url_password(value)!r}"
        )
    return value


Mailbox = Annotated[str, AfterValidator(check_mailbox)]
PublicUrl = Annotated[Url, AfterValidator(check_no_credentials)]
"""A URL that goes into emails and web pages: absolute, and without credentials."""


def check_image_location(value: str) -> str:
    """An absolute URL without credentials, or a local image file (prepared and published like an issue's)."""
    if value.lower().startswith(("http://", "https://")):
        return check_no_credentials(check_absolute_url(value))
    if "://" in value or value.startswith("mailto:") or any(ord(char) < 32 for char in value):
        raise ValueError(f"must be an absolute http(s) URL or the path of an image file, got {value!r}")
    return value


ImageLocation = Annotated[
    str,
    AfterValidator(check_image_location),
    Field(description="An absolute http(s) URL, or an image file (relative to the folder mailer runs in)."),
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    read_from: ClassVar[SettingsSources | None] = None
    """The sources load_settings has read (with their places); None: read them here."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_passwords_in(value)


class Logo(_Config):
    src: ImageLocation
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
    label: str = Field(
        min_length=1, description='The link text beside the icon, e.g. "Twitter"; the icon itself is decorative.'
    )
    url: PublicUrl
    icon: ImageLocation


class Branding(_Config):
    name: str = Field("Newsletter", min_length=1, description="Short organisation name.")
    full_name: str | None = None
    website: PublicUrl | None = None
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
        env_file=DOTENV,
        extra="forbid",
        toml_file=DEFAULT_CONFIG,
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    public_url: PublicUrl | None = Field(
        None, description="Base URL of the public web version; issue 2016-02 is published at <public_url>/2016-02/."
    )
    branding: Branding = Branding()
    issues_dir: Path = Field(
        Path("issues"),
        description="The folder of issue files: the newest one for send and preview, the archive, draft --since.",
    )
    templates_dir: Path | None = Field(None, description="A folder of templates replacing the built-in ones.")

    database_url: str = Field(
        "sqlite:///mailer.sqlite3",
        min_length=1,
        description="SQLAlchemy URL of the subscriber and delivery database, e.g. postgresql+psycopg://user:pw@host/db.",
    )

    smtp_host: str = Field("localhost", min_length=1)
    smtp_port: int | None = Field(
        None, ge=1, le=65535, description="Default by smtp_tls: 587 starttls, 465 tls, 25 none."
    )
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(30, gt=0, le=600, description="Seconds to wait for the SMTP server.")
    smtp_ca_file: Path | None = Field(
        None, description="A CA bundle (PEM) to trust for the relay's certificate, e.g. the organisation's own CA."
    )
    smtp_tls_verify: bool = Field(
        True, description="Check the relay's certificate; false only for test relays (warned on every send)."
    )
    smtp_helo_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
        description="The name mailer gives in EHLO; default: this host's fully-qualified name.",
    )
    special_use_domains: list[str] = Field(
        default_factory=list,
        description="Special-use domains accepted in addresses (intranets), e.g. ['internal', 'test', 'local'].",
    )

    smtp_pool_size: int = Field(8, ge=1, le=100, description="Concurrent SMTP connections.")
    smtp_pipelining: bool = Field(
        True, description="Pipeline MAIL, RCPT and DATA (RFC 2920) when the relay offers PIPELINING."
    )
    rate_per_second: float = Field(0, ge=0, le=10_000, description="Messages per second at most; 0 for no limit.")
    rate_per_hour: int = Field(
        0, ge=0, le=36_000_000, description="Messages per hour at most (relay quotas); 0 for no limit."
    )
    max_attempts: int = Field(
        5, ge=1, le=50, description="Tries per message for temporary failures (4xx, dropped connections)."
    )
    retry_base_delay: float = Field(
        2.0, gt=0, le=3600, description="Seconds before the first retry; doubles each time, with jitter."
    )
    give_up_after: float = Field(
        600, gt=0, le=7 * 24 * 3600, description="Seconds without any successful connection before the send stops."
    )
    unsubscribe_mailto: str | None = Field(None, description="Optional mailto: address added to List-Unsubscribe.")
    default_greeting: str | None = Field(
        None,
        description='The greeting for a recipient without a name when the issue\'s greeting has no fallback, e.g. "Dear reader,"; '
        "unset: such recipients get no greeting line.",
    )

    sender: Mailbox | None = Field(None, description="From: header, e.g. 'ICMPD Newsletter <newsletter@icmpd.org>'.")
    reply_to: Mailbox | None = Field(None, description="Reply-To: header, same form as sender.")
    unsubscribe_secret: Annotated[SecretStr | None, AfterValidator(check_secret_length)] = Field(
        None, description=f"Signs unsubscribe links; at least {MIN_SECRET_LENGTH} characters."
    )
    confirm_hours: float = Field(
        48, gt=0, le=24 * 30, description="Hours a subscription's confirmation link stays valid (double opt-in)."
    )
    subscribe_per_ip_per_hour: int = Field(
        10, ge=1, le=10_000, description="Subscribe requests one IP address may make per hour on the public web."
    )
    confirm_per_address_per_day: int = Field(
        3, ge=1, le=144, description="Confirmation mails one address may be sent per day (at most one per 10 minutes)."
    )
    claim_lease_seconds: float = Field(
        60,
        ge=5,
        le=3600,
        description="A sender's claim on recipients lapses this long after its last heartbeat (PostgreSQL).",
    )
    max_issue_bytes: int = Field(
        1_000_000, ge=1024, le=100_000_000, description="Issue files larger than this are refused unread."
    )
    bounce_address: Mailbox | None = Field(
        None,
        description="Envelope sender for bounces, e.g. bounces@news.example.org; each message's MAIL FROM becomes "
        "bounces+TOKEN@news.example.org (VERP), TOKEN naming the delivery. Unset: the sender's address.",
    )
    bounce_mailbox: str | None = Field(
        None,
        description="Where bounces arrive: imaps://user@host/INBOX, imap://user@host/INBOX (STARTTLS), a Maildir "
        "folder or an mbox file.",
    )
    bounce_password: SecretStr | None = Field(None, description="Password of the IMAP bounce mailbox.")
    bounce_ca_file: Path | None = Field(
        None, description="A CA bundle (PEM) to trust for the IMAP server's certificate."
    )
    bounce_tls_verify: bool = Field(True, description="Check the IMAP server's certificate.")
    bounce_handled_folder: str | None = Field(
        None, description="IMAP folder (or Maildir subfolder) handled messages are moved to; unset: marked read."
    )
    bounce_poll_seconds: float = Field(
        60, ge=1, le=86_400, description="mailer bounces fetch --watch: seconds between polls (IMAP IDLE wakes sooner)."
    )
    soft_bounce_limit: int = Field(
        3,
        ge=1,
        le=100,
        description="Soft bounces on different issues, with no delivery between them, that suppress an address.",
    )
    images: Literal["hosted", "embed"] = Field(
        "hosted",
        description="Local images: hosted with the web version (<public_url>/<issue>/images/), or embed: inline "
        "parts of every message (cid:), for lists without a public web such as internal staff lists.",
    )
    dkim_key_file: Path | None = Field(None, description="PEM private key to DKIM-sign messages with.")
    dkim_selector: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", description="DKIM selector (s=), a DNS label."
    )
    link_check_timeout: float = Field(
        10, gt=0, le=300, description="mailer check --links: seconds to wait for each request to a link's server."
    )
    check_links_before_send: bool = Field(
        False,
        description="mailer send --list checks every link of the issue first and refuses to send while one is "
        "broken (--force sends anyway).",
    )

    @field_validator("bounce_address", "bounce_mailbox", "bounce_handled_folder", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`MAILER_BOUNCE_ADDRESS=` turns a value of mailer.toml off, as for a variable that is not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("bounce_address")
    @classmethod
    def _check_bounce_address(cls, address: str | None) -> str | None:
        """An envelope address: no display name, and no `+` of its own, since VERP adds `+TOKEN` to the local part."""
        if address is None:
            return None
        if parseaddr(address)[1] != address:
            raise ValueError(f"must be a bare address like 'bounces@news.example.org', got {address!r}")
        if "+" in address.rpartition("@")[0]:
            raise ValueError(f"must not contain '+': each message's envelope sender adds +TOKEN to it, got {address!r}")
        return address

    @field_validator("default_greeting")
    @classmethod
    def _check_default_greeting(cls, greeting: str | None) -> str | None:
        """Plain text as readers see it: it is what recipients without a name get, so it has nothing to fill in."""
        if greeting is not None and ("{" in greeting or "}" in greeting):
            raise ValueError(
                "is the line for recipients without a name, so it takes no placeholders or braces; "
                "write it as they should read it, e.g. 'Dear reader,'"
            )
        return greeting

    @field_validator("special_use_domains")
    @classmethod
    def _check_special_use_domains(cls, names: list[str]) -> list[str]:
        """Lower case, no leading or trailing dot: `.Test` and `test` mean the same."""
        cleaned = [name.strip().strip(".").casefold() for name in names]
        for name, given in zip(cleaned, names, strict=True):
            if not name or not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", name):
                raise ValueError(f"{given!r} is not a domain name such as 'internal' or 'corp.test'")
        return cleaned

    @model_validator(mode="after")
    def _check_transport(self) -> Settings:
        if self.smtp_tls == "none" and self.smtp_host.strip().strip("[]").lower() not in LOCAL_HOSTS:
            raise ValueError("smtp_tls = none sends passwords and mail in clear text; it is allowed only for localhost")
        if (self.dkim_key_file is None) != (self.dkim_selector is None):
            raise ValueError("dkim_key_file and dkim_selector go together; set both or neither")
        return self

    @property
    def smtp_port_effective(self) -> int:
        """The port to connect to: smtp_port if set, else the usual one for smtp_tls."""
        return self.smtp_port if self.smtp_port is not None else DEFAULT_PORTS[self.smtp_tls]

    read_from: ClassVar[SettingsSources | None] = None
    """The sources load_settings has read (with their places); None: read them here."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask_passwords_in(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = cls.read_from
        if sources is None:
            toml_file = settings_cls.model_config.get("toml_file")
            config = Path(toml_file) if isinstance(toml_file, str | os.PathLike) else DEFAULT_CONFIG
            sources = read_sources(settings_cls, config)
        return (init_settings, *sources.layers)

    @property
    def archive_url(self) -> str:
        """The public web address every email links to; rendering cannot do without it."""
        if not self.public_url:
            raise ConfigError(
                f"public_url is not set; set it in {DEFAULT_CONFIG} or MAILER_PUBLIC_URL "
                "(emails link to their web version at <public_url>/<issue>/)"
            )
        return self.public_url

    def web_url(self, slug: str) -> str:
        return f"{self.archive_url.rstrip('/')}/{slug}/"


def config_path(explicit: Path | None = None) -> Path:
    """The config file: --config, else MAILER_CONFIG (the environment's, else .env's), else ./mailer.toml."""
    return _chosen_config(explicit)[0]


def _chosen_config(explicit: Path | None) -> tuple[Path, str | None]:
    """The config file and what named it, as an error names it (`MAILER_CONFIG=x.toml`); None for the default."""
    if explicit is not None:
        return explicit, str(explicit)
    exact = [(CONFIG_ENV, os.environ.get(CONFIG_ENV))]  # before mailer_config, as pydantic-settings reads names
    for name, value in [*exact, *os.environ.items()]:
        if name.upper() == CONFIG_ENV and value:
            return Path(value), f"{name}={shlex.quote(value)}"
    try:
        dotenv = read_dotenv(DOTENV) if DOTENV.is_file() else []
    except ConfigError:
        dotenv = []  # reading the settings reports it
    for name, value, line in dotenv:
        if name.upper() == CONFIG_ENV and value:
            return Path(value), f"{DOTENV}:{line}: {name}: {value}"
    return DEFAULT_CONFIG, None


def read_sources(
    settings_cls: type[BaseSettings], config: Path, overrides: dict[str, object] | None = None
) -> SettingsSources:
    """The environment, .env and the config file, each value with its place; MAILER_CONFIG is no setting."""
    return SettingsSources(
        settings_cls, config=config, overrides=overrides or {}, reserved={CONFIG_ENV}, mask=mask_url_password
    )


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build the one Settings object; `overrides` are CLI flags that were actually given."""
    return load_settings_and_sources(config_file, **overrides)[0]


def load_settings_and_sources(config_file: Path | None = None, **overrides: object) -> tuple[Settings, SettingsSources]:
    """The Settings object and where each of its values came from (for `mailer config`).

    Every problem is one line naming its place: `MAILER_SMTP_PORT=abc: smtp_port: ...`,
    `.env:3: MAILER_SMTP_PORT: ...`, `mailer.toml:7: smtp_port: ...`; all of them at once.
    """
    path, named_by = _chosen_config(config_file)
    if named_by is not None and not path.is_file():
        what = "is a folder, not a config file" if path.is_dir() else "no such config file"
        raise ConfigError(f"{named_by}: {what}")
    sources = read_sources(Settings, path, overrides)

    class _Loaded(Settings):
        read_from = sources

    settings: Settings | None = None
    failure: ValidationError | None = None
    try:
        settings = _Loaded(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        failure = error
    except SettingsError as error:
        raise ConfigError(str(error)) from None
    problems = sources.problems(failure)
    if problems or settings is None:
        raise ConfigError("\n".join(problems))
    return settings, sources
