"""The command line: parse flags, call one library function, print its result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from mailer.errors import ExitStatus, MailerError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

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


@cli.command()
@config_option
@reports_errors
def config(config_file: Path | None) -> None:
    """Show the effective settings and where each came from; secrets are masked."""
    from mailer.config_report import describe_settings

    for line in describe_settings(config_file):
        click.echo(line)


def _database(config_file: Path | None) -> Engine:
    from mailer.database import open_database
    from mailer.settings import load_settings

    return open_database(load_settings(config_file).database_url)


@cli.group(invoke_without_command=True)
@config_option
@click.pass_context
@reports_errors
def lists(ctx: click.Context, config_file: Path | None) -> None:
    """Show the lists with their subscriber counts (and create them: mailer lists create)."""
    if ctx.invoked_subcommand is not None:
        return
    from mailer.lists import list_summaries

    summaries = list_summaries(_database(config_file))
    if not summaries:
        click.echo("no lists yet; create one with: mailer lists create NAME --description TEXT")
        return
    width = max(4, *(len(s.name) for s in summaries))
    click.echo(f"{'NAME':<{width}}  {'SUBSCRIBED':>10}  {'UNSUBSCRIBED':>12}  {'SUPPRESSED':>10}  DESCRIPTION")
    for s in summaries:
        click.echo(
            f"{s.name:<{width}}  {s.subscribed:>10}  {s.unsubscribed:>12}  {s.suppressed:>10}  {s.description}".rstrip()
        )


@lists.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the list is for.")
@config_option
@reports_errors
def lists_create(name: str, description: str, config_file: Path | None) -> None:
    """Create a list."""
    from mailer.lists import create_list

    create_list(_database(config_file), name, description)
    click.echo(f"created list '{name}'")


@cli.group()
def subscribers() -> None:
    """Add, remove, import and export a list's subscribers."""


@subscribers.command("import")
@click.argument("list_name", metavar="LIST")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@config_option
@reports_errors
def subscribers_import(list_name: str, csv_file: Path, dry_run: bool, config_file: Path | None) -> None:
    """Import subscribers from CSV (a header with an email column; name and any attribute columns)."""
    from mailer.subscriber_csv import import_subscribers

    report = import_subscribers(_database(config_file), list_name, csv_file, dry_run=dry_run)
    head, *rest = report.lines()
    click.echo(head)
    for line in rest:
        click.echo(line, err=line.startswith(str(csv_file)))
    if report.invalid:
        sys.exit(ExitStatus.INVALID_INPUT)


@subscribers.command("export")
@click.argument("list_name", metavar="LIST")
@config_option
@reports_errors
def subscribers_export(list_name: str, config_file: Path | None) -> None:
    """Write the list's mailable subscribers as CSV to standard output."""
    from mailer.subscriber_csv import export_subscribers

    export_subscribers(_database(config_file), list_name, sys.stdout)


@subscribers.command("add")
@click.argument("list_name", metavar="LIST")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option(
    "--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="An attribute, e.g. language=fr (repeatable)."
)
@config_option
@reports_errors
def subscribers_add(list_name: str, email: str, name: str, attrs: tuple[str, ...], config_file: Path | None) -> None:
    """Subscribe one address to a list."""
    from mailer.lists import add_subscriber
    from mailer.subscriber_csv import attribute_name

    attributes: dict[str, str] = {}
    for attr in attrs:
        key, sep, value = attr.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{attr}' is not KEY=VALUE", param_hint="--attr")
        attributes[attribute_name(key)] = value.strip()
    outcome = add_subscriber(_database(config_file), list_name, email, name=name, attributes=attributes)
    click.echo(f"{email.strip()}: {outcome} on '{list_name}'")


@subscribers.command("remove")
@click.argument("list_name", metavar="LIST")
@click.argument("email")
@config_option
@reports_errors
def subscribers_remove(list_name: str, email: str, config_file: Path | None) -> None:
    """Take one address off a list (it may be added again; to stop all mail use mailer unsubscribe)."""
    from mailer.lists import remove_subscriber

    remove_subscriber(_database(config_file), list_name, email)
    click.echo(f"{email.strip()}: removed from '{list_name}'")


@cli.command()
@click.argument("email")
@click.option(
    "--reason",
    type=click.Choice(["unsubscribed", "bounced", "complained", "blocked"]),
    default="unsubscribed",
    show_default=True,
    help="Why the address is suppressed.",
)
@config_option
@reports_errors
def unsubscribe(email: str, reason: str, config_file: Path | None) -> None:
    """Suppress an address on every list: no send will ever mail it again."""
    from mailer.lists import unsubscribe as suppress

    ended = suppress(_database(config_file), email, reason=reason)
    click.echo(f"{email.strip()}: suppressed ({reason}); unsubscribed from {ended} list{'s' if ended != 1 else ''}")


def main() -> None:
    cli(prog_name="mailer")


if __name__ == "__main__":
    main()
