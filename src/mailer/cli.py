"""The command line: parse flags, call one library function, print its result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from mailer.errors import MailerError

P = ParamSpec("P")
R = TypeVar("R")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: $MAILER_CONFIG or ./mailer.toml).",
)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one line each on stderr and a named exit code; real bugs keep their traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MailerError as error:
            for line in error.lines():
                click.echo(line, err=True)
            sys.exit(error.exit_status)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailer")
def cli() -> None:
    """Newsletters as code: render YAML issues to email and send them."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Output folder (default: build/<issue>/).",
)
@config_option
@reports_errors
def render(files: tuple[Path, ...], out_dir: Path | None, config_file: Path | None) -> None:
    """Validate issues and write email.html, email.txt and web.html for each."""
    from mailer.build import build
    from mailer.settings import load_settings

    settings = load_settings(config_file)
    for written in build(list(files), settings, out_dir=out_dir):
        click.echo(written.summary())


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@reports_errors
def check(files: tuple[Path, ...]) -> None:
    """Validate issue files without writing anything (for pre-commit and CI)."""
    from mailer.build import load_all

    loaded = load_all(list(files))
    click.echo(f"{len(loaded)} issue file{'s' if len(loaded) != 1 else ''} OK")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the issue format (committed as schema/issue.schema.json)."""
    from mailer.model import issue_json_schema

    click.echo(json.dumps(issue_json_schema(), indent=2, ensure_ascii=False))


def main() -> None:
    cli(prog_name="mailer")


if __name__ == "__main__":
    main()
